"""Turn a one-line packet description (what `fwlab explain` takes) into packet bytes.

    tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags SA seq 1 ack 1 len 100
    tcp 192.0.2.2:40000 -> 203.0.113.10:https flags syn,ack
    udp [2001:db8:1::2]:5353 -> [2001:db8:2::10]:domain
    icmp 192.0.2.2 -> 203.0.113.10 type echo-request id 7
    icmp 198.51.100.1 -> 192.0.2.2 type time-exceeded quoting udp 192.0.2.2:40000 -> 203.0.113.10:53
    icmp 203.0.113.1 -> 192.0.2.2 type destination-unreachable code port-unreachable
    gre 192.0.2.2 -> 203.0.113.10          (any name of /etc/protocols: esp, ah, sctp, ...)
    proto 47 192.0.2.2 -> 203.0.113.10     (proto NAME too)

The words are the rules language's: service names for ports (fw/core/services.py), protocol
names (fw/core/protocols.py), ICMP type and code names and TCP flag names as nft spells them.

A mistake is reported as one line that names the offending word, since the user typed the line
on a command line and has nothing else to look at.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from fw import craft
from fw.core.icmp_types import ICMP_CODES, ICMP_TYPES, ICMPV6_CODES, ICMPV6_TYPES
from fw.core.protocols import PROTO_NAMES, PROTOCOL_NAMES, PROTOCOLS, TCP, TCP_FLAGS, UDP
from fw.core.services import service_names, service_port
from fw.errors import PacketSpecError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_COMMON = ("len", "ttl")
_OPTIONS = {
    "tcp": ("flags", "seq", "ack", "window", *_COMMON),
    "udp": _COMMON,
    "icmp": ("type", "code", "id", "seq", *_COMMON),
    "icmpv6": ("type", "code", "id", "seq", *_COMMON),
    "proto": _COMMON,
}
_LIMITS = {"seq": 0xFFFFFFFF, "ack": 0xFFFFFFFF, "window": 0xFFFF, "len": 60000, "ttl": 255}
_LIMITS |= {"code": 255, "id": 0xFFFF}
_QUOTE_ROOM = {4: 576 - 28, 6: 1280 - 48}  # what an ICMP error may quote, as Linux does
_ICMP_ERRORS = {4: {3, 4, 5, 11, 12}, 6: {1, 2, 3, 4}}
MAX_QUOTING = 8  # an error quoting an error quoting ...: 576 bytes hold no more than about 19
_SHOWN = 120  # characters of the description an error message repeats


class _Spec:
    """The description being parsed, kept so every error can quote it in full."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, word: str, why: str) -> PacketSpecError:
        return PacketSpecError(f"bad packet {self.shown()!r}: {_cut(word)!r} {why}")

    def shown(self) -> str:
        return _cut(self.text)


def _cut(text: str) -> str:
    """A long description or word shortened, so that the message stays one readable line."""
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


def parse_packet(text: str) -> bytes:
    """The packet `text` describes, as bytes starting at the IP header."""
    spec = _Spec(text.strip())
    words = spec.text.replace("->", " -> ").split()
    if not words:
        raise PacketSpecError("bad packet '': empty description (e.g. 'tcp 1.2.3.4:80 -> ...')")
    depth = words.count("quoting")
    if depth > MAX_QUOTING:
        raise spec.error("quoting", f"is nested {depth} deep; at most {MAX_QUOTING} "
                                    "(an ICMP error quoting an ICMP error ...)")
    return _parse(spec, words)


def _parse(spec: _Spec, words: list[str]) -> bytes:
    kind, words = _kind(spec, words)
    quoted = None
    if "quoting" in words:
        cut = words.index("quoting")
        words, quoted = words[:cut], _parse(spec, words[cut + 1 :] or ["(nothing)"])
    if len(words) < 3 or words[1] != "->":
        raise spec.error(" ".join(words[:3]) or kind, "should be 'SRC -> DST'")
    src, sport = _endpoint(spec, words[0], kind)
    dst, dport = _endpoint(spec, words[2], kind)
    if src.version != dst.version:
        raise spec.error(words[2], f"is not the same IP version as {words[0]!r}")
    opts = _options(spec, kind, words[3:])
    return _BUILDERS[kind](_Desc(spec, kind, src, dst, sport, dport, opts, quoted))


def _kind(spec: _Spec, words: list[str]) -> tuple[str, list[str]]:
    """The leading protocol word: tcp, udp, icmp, icmpv6, or any other protocol by name
    (`gre`) or number (`proto 47`, `proto gre`), kept in the options as `proto`."""
    word, rest = words[0].lower(), words[1:]
    if word == "proto" and rest:
        word, rest = rest[0].lower(), rest[1:]
        number = PROTOCOL_NAMES.get(word)
        if number is None and not word[:1].isdigit():
            raise spec.error(words[1], f"is not a protocol name or number{_close(word)}")
        number = number if number is not None else _number(spec, word, 255)
    elif word in _OPTIONS and word != "proto":
        return word, rest
    elif word in PROTOCOL_NAMES:
        number = PROTOCOL_NAMES[word]
    else:
        raise spec.error(words[0], "is not a protocol (tcp, udp, icmp, icmpv6, a name such as "
                                   f"gre or esp, or proto N){_close(word)}")
    name = PROTO_NAMES.get(number)
    if name in PROTOCOLS and not word[:1].isdigit():  # `proto tcp`, `ipv6-icmp`: the header
        return name, rest                                # too (`proto 6` stays a bare number)
    return "proto", [*rest, "proto", str(number)]


def _close(word: str, known: list[str] | None = None) -> str:
    from difflib import get_close_matches

    close = get_close_matches(word, known if known is not None else list(PROTOCOL_NAMES), n=1,
                              cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _endpoint(spec: _Spec, word: str, kind: str) -> tuple[IPAddress, int]:
    addr, port = _split_port(spec, word)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise spec.error(addr, "is not an IP address") from None
    needs_port = kind in _PORT_PROTOCOLS
    if needs_port and port is None:
        raise spec.error(word, "needs a port (ADDR:PORT or [IPv6]:PORT)")
    if not needs_port and port is not None:
        raise spec.error(word, "has a port, but this protocol has none")
    return ip, _port(spec, port, _PORT_PROTOCOLS[kind]) if port is not None else 0


_PORT_PROTOCOLS = {"tcp": TCP, "udp": UDP}


def _port(spec: _Spec, word: str, proto: int) -> int:
    """A port number, or a service name of the protocol (`https`, `domain`), as in rules."""
    if word[:1].isdigit():
        return _number(spec, word, 0xFFFF)
    port = service_port(word.lower(), proto)
    if port is None:
        what = "TCP" if proto == TCP else "UDP"
        raise spec.error(word, f"is not a port number or a {what} service name"
                               f"{_close(word.lower(), list(service_names(proto)))}")
    return port


def _split_port(spec: _Spec, word: str) -> tuple[str, str | None]:
    """`[v6]:port`, `[v6]`, `v4:port`, `v4`, or a bare v6 address (which has no port)."""
    if word.startswith("["):
        addr, bracket, rest = word[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise spec.error(word, "should be [IPv6] or [IPv6]:PORT")
        return addr, rest[1:] if rest else None
    if word.count(":") == 1:
        addr, _, port = word.partition(":")
        return addr, port
    return word, None


def _options(spec: _Spec, kind: str, words: list[str]) -> dict[str, str]:
    allowed = _OPTIONS[kind] + (("proto",) if kind == "proto" else ())
    opts: dict[str, str] = {}
    for i in range(0, len(words), 2):
        key = words[i].lower()
        if key not in allowed:
            raise spec.error(words[i], f"is not an option of {kind} ({', '.join(_OPTIONS[kind])})")
        if i + 1 >= len(words):
            raise spec.error(words[i], "needs a value")
        opts[key] = words[i + 1]
    return opts


def _number(spec: _Spec, word: str, limit: int) -> int:
    try:
        value = int(word, 0)
    except ValueError:
        raise spec.error(word, "is not a number") from None
    if not 0 <= value <= limit:
        raise spec.error(word, f"is out of range (0-{limit})")
    return value


@dataclass(slots=True)
class _Desc:
    """A description split into its parts, ready for the builder of its protocol."""

    spec: _Spec
    kind: str
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    opts: dict[str, str]
    quoted: bytes | None

    def numbers(self, **defaults: int) -> dict[str, int]:
        """The numeric options present, checked against their range, over `defaults`."""
        values = dict(defaults)
        for key, word in self.opts.items():
            if key in _LIMITS:
                values[key] = _number(self.spec, word, _LIMITS[key])
        return values

    def no_quote(self, what: str) -> None:
        if self.quoted is not None:
            raise self.spec.error("quoting", f"only goes with an ICMP error, not {what}")


def _tcp(d: _Desc) -> bytes:
    d.no_quote("tcp")
    bits = _tcp_flags(d.spec, d.opts.get("flags", "S"))
    n = d.numbers(seq=0, ack=0, window=64240, len=0, ttl=64)
    payload = bytes(n["len"])
    args = (d.src, d.dst, d.sport, d.dport, bits, n["seq"], n["ack"], n["window"], payload)
    return craft.tcp(*args, ttl=n["ttl"])


def _tcp_flags(spec: _Spec, flags: str) -> int:
    """`SA` (tcpdump's letters), `syn,ack` (nft's names) or a number (`0`: none)."""
    if flags[:1].isdigit():
        return _number(spec, flags, 255)
    names = flags.lower().split(",")
    if len(names) > 1 or names[0] in TCP_FLAGS:
        if all(name in TCP_FLAGS for name in names):
            return sum({TCP_FLAGS[name] for name in names})
    else:
        try:
            return craft.tcp_flags(flags)
        except ValueError:
            pass
    raise spec.error(flags, "are not TCP flags (letters F S R P A U E C, names such as "
                            "syn,ack, or a number)")


def _udp(d: _Desc) -> bytes:
    d.no_quote("udp")
    n = d.numbers(len=0, ttl=64)
    return craft.udp(d.src, d.dst, d.sport, d.dport, bytes(n["len"]), ttl=n["ttl"])


def _proto(d: _Desc) -> bytes:
    d.no_quote("proto")
    n = d.numbers(len=0, ttl=64)
    return craft.ip(d.src, d.dst, int(d.opts["proto"], 0), bytes(n["len"]), ttl=n["ttl"])


def _icmp(d: _Desc) -> bytes:
    want = 4 if d.kind == "icmp" else 6
    if d.src.version != want:
        hint = "icmpv6 for IPv6 addresses" if want == 4 else "icmp for IPv4 addresses"
        raise d.spec.error(str(d.src), f"is not an IPv{want} address (use {hint})")
    itype = _icmp_type(d.spec, d.opts.get("type", "echo-request"), want)
    codes = ICMP_CODES if want == 4 else ICMPV6_CODES
    code = d.opts.get("code", "0").lower()
    if code in codes:  # nft's names of destination-unreachable codes
        d.opts["code"] = str(codes[code])
    n = d.numbers(code=0, id=1, seq=1, len=0, ttl=64)
    if itype in _ICMP_ERRORS[want]:
        return craft.icmp(d.src, d.dst, itype, n["code"], _quote(d, n["len"]), ttl=n["ttl"])
    d.no_quote("an ICMP type that is not an error")
    rest = (n["id"] << 16) | n["seq"]
    return craft.icmp(d.src, d.dst, itype, n["code"], bytes(n["len"]), rest, ttl=n["ttl"])


def _quote(d: _Desc, extra: int) -> bytes:
    """What the error quotes; by default a datagram its receiver could have sent."""
    quoted = d.quoted if d.quoted is not None else craft.udp(d.dst, d.src, 40000, 33434)
    return (quoted + bytes(extra))[: _QUOTE_ROOM[d.src.version]]


def _icmp_type(spec: _Spec, word: str, family: int) -> int:
    table = ICMP_TYPES if family == 4 else ICMPV6_TYPES
    if word.lower() in table:
        return table[word.lower()]
    if word[:1].isdigit():
        return _number(spec, word, 255)
    names = ", ".join(table)
    raise spec.error(word, f"is not an ICMP{'v6' if family == 6 else ''} type ({names})")


_BUILDERS: dict[str, Callable[[_Desc], bytes]] = {
    "tcp": _tcp,
    "udp": _udp,
    "proto": _proto,
    "icmp": _icmp,
    "icmpv6": _icmp,
}
