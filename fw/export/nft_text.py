"""nft text made into `nft -j list ruleset` JSON by the only parser that is right by definition:
nft itself, in a throwaway network namespace (never the caller's), deleted afterwards.

The JSON has no source lines, so `rule_lines` scans the text for where each chain's rules
stand; an unsupported rule is then reported at its line. The scan is simple (tables, chains,
`add rule`, flush/delete); where its count of a chain's rules disagrees with nft's, that chain's
rules are reported by position instead.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from fw.errors import FwlabError

_names = itertools.count()
TIMEOUT = 30
MAX_MISSING = 32  # interfaces named by index that a stand-in may replace
ChainKey = tuple[str, str, str]  # family, table, chain


def ruleset_json(text: str, origin: str) -> dict:
    """Load `text` into a fresh namespace and list it back as JSON."""
    if os.geteuid() != 0:
        raise FwlabError("reading nft text needs root (it is loaded into a throwaway network "
                         "namespace); give the output of `nft -j list ruleset` instead")
    if shutil.which("nft") is None:
        raise FwlabError("reading nft text needs nft (Debian package nftables)")
    name = f"fwx{os.getpid()}i{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=TIMEOUT)
    try:
        return load_and_list(name, text, origin)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=TIMEOUT)


def load_and_list(netns: str, text: str, origin: str) -> dict:
    """nft's own error (it names line and column) becomes the user's, with the file's name."""
    with tempfile.TemporaryDirectory(prefix="fwlab-import-") as tmp:
        script = Path(tmp) / "ruleset.nft"
        script.write_text(text)
        cwd = Path(origin).parent if origin != "-" else Path.cwd()
        loaded = nft(netns, ["-f", str(script)], cwd)
        for _ in range(MAX_MISSING):
            missing = missing_interface(loaded.stderr)
            if loaded.returncode == 0 or missing is None:
                break
            add_stand_in(netns, missing)
            loaded = nft(netns, ["-f", str(script)], cwd)
        if loaded.returncode != 0:
            first = next((ln for ln in loaded.stderr.splitlines() if "Error" in ln), "")
            raise FwlabError(f"{origin}: nft cannot load it: "
                             + first.replace(str(script), origin).strip())
    listed = nft(netns, ["-j", "list", "ruleset"], Path.cwd())
    if listed.returncode != 0:
        raise FwlabError(f"nft -j list ruleset failed: {listed.stderr.strip()}")
    return json.loads(listed.stdout)


def missing_interface(stderr: str) -> str | None:
    """`iif eth0` names an interface by index, which must exist when the rule loads: the name
    under nft's caret, so that an interface of that name can stand in for it in the namespace."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines[:-2]):
        if line.endswith("Error: Interface does not exist"):
            source, caret = lines[i + 1], lines[i + 2]
            start = caret.index("^")
            name = source[start:start + caret.count("^")].strip('"')
            return name if re.fullmatch(r"[\w.-]{1,15}", name) else None
    return None


def add_stand_in(netns: str, name: str) -> None:
    """A veth pair inside the namespace (this kernel has no dummy interfaces), its peer named
    so that nft rule sets are unlikely to need the name."""
    peer = f"fwx-peer{next(_names)}"
    added = subprocess.run(["ip", "-n", netns, "link", "add", name, "type", "veth", "peer",
                            "name", peer], capture_output=True, text=True, timeout=TIMEOUT)
    if added.returncode != 0:
        raise FwlabError(f"cannot stand in for interface {name!r}: {added.stderr.strip()}")


def nft(netns: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT)


TABLE_RE = re.compile(r"^\s*(?:add\s+|create\s+)?table\s+(?:(ip6?|inet|arp|bridge|netdev)\s+)?"
                      r"([\w.-]+)\s*(\{)?")
CHAIN_RE = re.compile(r"^\s*chain\s+([\w.-]+)\s*\{")
ADD_RULE_RE = re.compile(r"^\s*(?:add\s+)?rule\s+(?:(ip6?|inet|arp|bridge|netdev)\s+)?"
                         r"([\w.-]+)\s+([\w.-]+)\s+\S")
DELETE_RE = re.compile(r"^\s*(?:delete|destroy|flush)\s+table\s+(?:(ip6?|inet|arp|bridge|netdev)"
                       r"\s+)?([\w.-]+)")
CHAIN_HEAD = ("type ", "policy ", "comment ", "devices", "flags ")


def rule_lines(text: str) -> dict[ChainKey, list[int]]:
    """For each chain, the line each of its rules starts on, in order."""
    found: dict[ChainKey, list[int]] = {}
    table: tuple[str, str] | None = None
    chain: str | None = None
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if depth == 0:
            table = top_level(code, number, found) or table
            chain = None
        elif depth == 1 and table and (m := CHAIN_RE.match(code)):
            chain = m.group(1)
            rule_starts(code[m.end():], number, found.setdefault((*table, chain), []))
        elif depth == 2 and table and chain:
            rule_starts(code, number, found.setdefault((*table, chain), []))
        depth = max(depth + code.count("{") - code.count("}"), 0)
    return found


def top_level(code: str, number: int, found: dict[ChainKey, list[int]]):
    """A table block opening (returns it), `add rule`, or what empties a table."""
    if code.strip() == "flush ruleset":
        found.clear()
    elif m := DELETE_RE.match(code):
        key = (m.group(1) or "ip", m.group(2))
        for chain_key in [k for k in found if k[:2] == key]:
            del found[chain_key]
    elif m := ADD_RULE_RE.match(code):
        found.setdefault((m.group(1) or "ip", m.group(2), m.group(3)), []).append(number)
    elif (m := TABLE_RE.match(code)) and m.group(3):
        return (m.group(1) or "ip", m.group(2))
    return None


def rule_starts(code: str, number: int, lines: list[int]) -> None:
    """Statements on one line of a chain body (`;` separates them); chain settings are not rules."""
    for part in code.split(";"):
        words = part.strip()
        if words and words != "}" and not words.startswith(CHAIN_HEAD):
            lines.append(number)
