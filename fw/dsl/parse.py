"""Text to lark tree, and lark's syntax errors to one readable diagnostic."""

from __future__ import annotations

from difflib import get_close_matches
from functools import cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from fw.errors import RulesError, Span

# What a terminal is called in a message: users never see lark's terminal names.
TERMINAL_WORDS: dict[str, str] = {
    "NAME": "a name", "NUMBER": "a number", "RANGE": "a port range", "IPV4": "an IPv4 address",
    "IPV6": "an IPv6 address", "STRING": "a string", "VAR": "a $name", "_NL": "end of line",
    "VERDICT": "accept/drop/reject", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','",
    "EQUAL": "'='", "COLON": "':'", "CHAIN": "input/forward/output", "IFACE": "iif/oif",
    "FAMILY": "ip/ip6", "ADDR_FIELD": "saddr/daddr", "PORT_FIELD": "sport/dport",
    "ICMP_FAMILY": "icmp/icmpv6", "NAT_OPTION": "mapping/filtering", "BANG": "'!'",
    "NEG": "'!='", "MODE": "'mode'", "DEFINE": "'define'", "$END": "end of file",
    "WEIGHT": "'weight'", "POOL_METHOD": "round-robin/random/hash/source-hash",
}


@cache
def parser() -> Lark:
    return Lark.open_from_package(
        "fw.dsl", "grammar.lark", parser="lalr", propagate_positions=True, maybe_placeholders=False
    )


def parse_text(text: str, file: str) -> Tree:
    """Parse one file; a syntax error becomes a RulesError with the span of the bad token."""
    try:
        return parser().parse(text)
    except UnexpectedInput as exc:
        raise RulesError(syntax_message(exc), syntax_span(exc, file, text)) from None


def syntax_span(exc: UnexpectedInput, file: str, text: str) -> Span:
    token = getattr(exc, "token", None)
    if isinstance(exc, UnexpectedEOF) or (isinstance(token, Token) and token.type == "$END"):
        lines = text.splitlines() or [""]
        return Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
    line, column = exc.line, exc.column
    width = len(token.value) if isinstance(token, Token) and token.value.strip() else 1
    return Span(file, line, column, line, column + width)


def syntax_message(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    if isinstance(exc, UnexpectedEOF):
        return "unexpected end of file (a '}' is missing?)"
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    if token.type == "$END":
        return "unexpected end of file (a '}' is missing?)"
    shown = "end of line" if token.type == "_NL" else repr(str(token.value))
    expected = sorted({TERMINAL_WORDS.get(t, describe_terminal(t)) for t in exc.expected})
    if len(expected) > 6:
        return f"unexpected {shown}{did_you_mean(str(token.value))}"
    return f"unexpected {shown}; expected {', '.join(expected)}"


KEYWORDS = (
    "accept drop reject counter log prefix comment iif oif ip ip6 saddr daddr proto tcp udp "
    "sport dport flags icmp icmpv6 type ct state masquerade snat dnat to mapping filtering "
    "mode define include policy input forward output nat round-robin random hash source-hash "
    "weight sticky seconds"
).split()


def did_you_mean(word: str) -> str:
    close = get_close_matches(word, KEYWORDS, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe_terminal(name: str) -> str:
    terminal = parser()._terminals_dict.get(name)
    if terminal is None:
        return name.lower()
    pattern = terminal.pattern
    return repr(pattern.value) if pattern.type == "str" else name.lower()
