"""Spans from lark positions: every diagnostic points at the token that is wrong."""

from __future__ import annotations

from lark import Token, Tree

from fw.errors import Span


def token_span(token: Token, path: str) -> Span:
    return Span(path, token.line, token.column, token.end_line, token.end_column)


def span_of(tree: Tree, path: str, width: int = 0) -> Span:
    """The span of a whole node; `width` narrows it to the node's first word."""
    meta = tree.meta
    if width:
        return Span(path, meta.line, meta.column, meta.line, meta.column + width)
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


def unquote(token: Token) -> str:
    r"""A string token's text: quotes dropped, \" and \\ unescaped."""
    body = str(token)[1:-1]
    return body.replace('\\"', '"').replace("\\\\", "\\")
