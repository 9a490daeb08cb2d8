"""Protocol numbers, names and the constants of the wire that more than one layer needs.

One table: the rules language (`proto tcp`), the decoder, the classifier's encodings, the
analysis and every view read their numbers from here, so a name means one number everywhere.
"""

from __future__ import annotations

ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58

PROTOCOLS: dict[str, int] = {"icmp": ICMP, "tcp": TCP, "udp": UDP, "icmpv6": ICMPV6}
# Every other protocol `proto NAME` knows: the names of Debian netbase's /etc/protocols (as nft
# reads them), shipped here so a rule file does not depend on the machine. Extension protocols
# (IPv6 routing, fragment, options headers) are left out: they are never a packet's protocol.
OTHER_PROTOCOLS: dict[str, int] = {
    "igmp": 2, "ggp": 3, "ipencap": 4, "st": 5, "egp": 8, "igp": 9, "pup": 12, "hmp": 20,
    "xns-idp": 22, "rdp": 27, "iso-tp4": 29, "dccp": 33, "xtp": 36, "ddp": 37, "idpr-cmtp": 38,
    "ipv6": 41, "idrp": 45, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "skip": 57,
    "ipv6-icmp": 58, "rspf": 73, "vmtp": 81, "eigrp": 88, "ospf": 89, "ipip": 94, "etherip": 97,
    "encap": 98, "pim": 103, "ipcomp": 108, "vrrp": 112, "l2tp": 115, "isis": 124, "sctp": 132,
    "fc": 133, "mobility-header": 135, "udplite": 136, "mpls-in-ip": 137, "manet": 138,
    "hip": 139, "shim6": 140, "wesp": 141, "rohc": 142, "ethernet": 143,
}
PROTOCOL_NAMES: dict[str, int] = {**PROTOCOLS, **OTHER_PROTOCOLS}
# number -> name, the first name winning (58 is "icmpv6", not "ipv6-icmp")
PROTO_NAMES: dict[int, str] = {n: name for name, n in reversed(PROTOCOL_NAMES.items())}
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

# IPv6's ARP: neighbour discovery and MLD (the exposure analysis leaves them out: no router
# forwards them).
LINK_CONTROL_ICMPV6 = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})
# The ones Linux never tracks (nf_conntrack_proto_icmpv6.c, noct_valid_new): `ct state
# untracked`, judged by the chains like any packet. A redirect (137) is not among them.
UNTRACKED_ICMPV6 = frozenset({130, 131, 132, 133, 134, 135, 136, 143})
ND_TYPES = {"nd-neighbor-solicit": 135, "nd-neighbor-advert": 136,
            "nd-router-solicit": 133, "nd-router-advert": 134}

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
