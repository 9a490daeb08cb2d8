"""`fwlab fmt`: a rule file in one style, like `terraform fmt` or `gofmt`.

The style: four spaces per block, one space between words, sets as `{ a, b }` with their
elements sorted (numbers by value, addresses by address, names alphabetically), `define`s of a
run aligned on `=`, one blank line at most, comments kept where they are. It works on lines and
words, not on the parse tree, so comments and the file's own order survive; the result must
parse as the original did (the caller checks), and formatting it again changes nothing.
"""

from __future__ import annotations

import re
from ipaddress import ip_address

INDENT = "    "
WORD = re.compile(r'"(?:[^"\\\n]|\\.)*"|!=|[{},=]|[^\s{},="]+')


def format_text(text: str) -> str:
    """The file in fwlab's one style."""
    lines = logical_lines(text)
    out: list[str] = []
    depth = 0
    for code, comment in lines:
        if not code and not comment:
            if out and out[-1] != "":
                out.append("")
            continue
        words = WORD.findall(code)
        closes = words[:1] == ["}"] and "{" not in words
        depth = max(depth - closes, 0)
        line = INDENT * depth + join(words, INDENT * depth) if words else INDENT * depth
        if comment:
            line = f"{line}  {comment}" if words else INDENT * depth + comment
        out.append(line.rstrip())
        depth += opens(words)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(align_defines(out)) + "\n"


def logical_lines(text: str) -> list[tuple[str, str]]:
    """(code, comment) per line, a `\\` continuation joined to the next line; a set that runs
    over several lines is one line too (unless a comment sits inside it)."""
    joined = re.sub(r"\\[\t ]*\r?\n", " ", text)
    raw = [split_comment(line) for line in joined.splitlines()]
    out: list[tuple[str, str]] = []
    for code, comment in raw:
        if out and open_set(out[-1][0]) and not out[-1][1]:
            out[-1] = (f"{out[-1][0]} {code.strip()}", comment)
        else:
            out.append((code.strip(), comment))
    return out


def split_comment(line: str) -> tuple[str, str]:
    """The code and the `# comment` of a line (a `#` inside a string is not a comment)."""
    in_string = escaped = False
    for i, char in enumerate(line):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "#":
            return line[:i], line[i:].rstrip()
    return line, ""


def open_set(code: str) -> bool:
    """A `{ ...` of a value (after a word, not a block's opening brace) not closed yet."""
    words = WORD.findall(code)
    depth = 0
    for i, word in enumerate(words):
        if word == "{" and not is_block(words, i):
            depth += 1
        elif word == "}" and depth:
            depth -= 1
    return depth > 0


BLOCKS = {"input", "forward", "output", "nat"}


def is_block(words: list[str], i: int) -> bool:
    return i == 1 and words[0] in BLOCKS


def opens(words: list[str]) -> int:
    return 1 if len(words) >= 2 and words[0] in BLOCKS and words[1] == "{" else 0


def join(words: list[str], indent: str = "") -> str:
    """Words with one space between them; set literals as `{ a, b }`, sorted (a long one with
    an element per line)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "{" and not is_block(words, i):
            end = closing(words, i)
            if end is not None:
                elements = [w for w in words[i + 1:end] if w != ","]
                out.append(set_text(sorted_elements(elements), indent))
                i = end + 1
                continue
        if words[i] == "," and out and i + 1 < len(words):  # `established,related`
            out[-1] += "," + words[i + 1]
            i += 2
            continue
        out.append(words[i])
        i += 1
    return " ".join(out)


def set_text(elements: list[str], indent: str) -> str:
    flat = "{ " + ", ".join(elements) + " }"
    if len(flat) <= LONG_SET:
        return flat
    inner = "".join(f"{indent}{INDENT}{e},\n" for e in elements)
    return "{\n" + inner + indent + "}"


LONG_SET = 80  # a longer set gets an element per line


def closing(words: list[str], start: int) -> int | None:
    for j in range(start + 1, len(words)):
        if words[j] == "}":
            return j
        if words[j] == "{":
            return None
    return None


def sorted_elements(elements: list[str]) -> list[str]:
    return sorted(elements, key=element_key)


def element_key(text: str) -> tuple:
    """Numbers and ranges by value, addresses by address (IPv4 first), names by name."""
    head = text.split("/")[0].split("-")[0]
    if head.isdigit():
        return (0, int(head), text)
    try:
        address = ip_address(head)
    except ValueError:
        return (2, 0, text)
    return (1, address.version, int(address), text)


def align_defines(lines: list[str]) -> list[str]:
    """`define` lines that follow each other have their `=` in one column."""
    out = list(lines)
    run: list[int] = []
    for i, line in enumerate([*lines, ""]):
        if line.startswith("define ") and " = " in line:
            run.append(i)
            continue
        if len(run) > 1:
            width = max(len(lines[k].split(" = ", 1)[0]) for k in run)
            for k in run:
                name, value = lines[k].split(" = ", 1)
                out[k] = f"{name.ljust(width)} = {value}"
        run = []
    return out
