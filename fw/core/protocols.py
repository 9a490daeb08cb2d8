"""Protocol numbers, names and the constants of the wire that more than one layer needs.

One table: the rules language (`proto tcp`), the decoder, the classifier's encodings, the
analysis and every view read their numbers from here, so a name means one number everywhere.
"""

from __future__ import annotations

ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58

PROTOCOLS: dict[str, int] = {"icmp": ICMP, "tcp": TCP, "udp": UDP, "icmpv6": ICMPV6}
PROTO_NAMES: dict[int, str] = {number: name for name, number in PROTOCOLS.items()}
PORT_PROTOCOLS = frozenset({TCP, UDP})

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
TCP_FLAGS: dict[str, int] = {
    "fin": FIN, "syn": SYN, "rst": RST, "psh": PSH,
    "ack": ACK, "urg": URG, "ecn": ECE, "ece": ECE, "cwr": CWR,
}
FLAG_LETTERS = "FSRPAUEC"  # tcpdump's letters, bit 0 first

ICMP_OF_FAMILY = {4: ICMP, 6: ICMPV6}
FAMILY_OF_ICMP = {ICMP: 4, ICMPV6: 6}
ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
# ICMP queries Linux's ICMP tracker lets open a connection, with the reply that answers each
# (nf_conntrack_proto_icmp.c valid_new/invmap: echo, timestamp, information, address mask;
# ICMPv6: echo). Their identifier is the connection's 'port'.
QUERY_REPLY = {4: {8: 0, 13: 14, 15: 16, 17: 18}, 6: {128: 129}}
QUERY_TYPES = {f: frozenset(m) | frozenset(m.values()) for f, m in QUERY_REPLY.items()}
ADDRESS_BITS = {4: 32, 6: 128}

# IPv6's ARP: neighbour discovery and MLD. ARP never reaches the queue, so neither do these
# get judged; without them no IPv6 host could even find the firewall.
LINK_CONTROL_ICMPV6 = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})

# Packets to these go to the firewall's own input, never forward.
MULTICAST: dict[int, tuple[str, ...]] = {
    4: ("224.0.0.0/4", "255.255.255.255/32"), 6: ("ff00::/8", "fe80::/10")}

EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range: the clients' source ports


def is_multicast(family: int, addr: int) -> bool:
    """The addresses of MULTICAST, tested without building ip_network objects (hot path)."""
    if family == 4:
        return addr >> 28 == 0xE or addr == 0xFFFFFFFF
    return addr >> 120 == 0xFF or addr >> 118 == 0x3FA  # ff00::/8, fe80::/10


def flag_letters(flags: int) -> str:
    return "".join(letter for bit, letter in enumerate(FLAG_LETTERS) if flags & (1 << bit))


def opens_tcp_connection(flags: int, loose: bool = True) -> bool:
    """A SYN (no ACK, RST or FIN) opens a TCP connection (Linux's tcp_new()); with
    nf_conntrack_tcp_loose (Linux's default, the engine's `tcp_loose`) a segment with ACK
    and none of the three picks one up in the middle."""
    opening = flags & (SYN | ACK | RST | FIN)
    return opening == SYN or (loose and opening == ACK)
