"""`fwlab exposure`: how much of the inside each rule set exposes to unsolicited packets.

The static part (fw/analysis/exposure.py) is computed here for every file and shown side by
side: a rich table, `--json`, `--plot` (matplotlib, Agg). `--live` measures the same in the lab
through `live_exposure()`, and a difference between computed and measured exits with status 3.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table
from rich.text import Text

from fw.analysis.exposure import CLASSES, EPHEMERAL, ClassExposure, Exposure, analyse
from fw.analysis.exposure_text import (
    class_json,
    forward_target,
    icmp_types_text,
    inside_text,
    port_ranges_text,
)
from fw.commands.common import routing_from, warn_unknown_interfaces
from fw.commands.output import print_json, stdout
from fw.core import ranges
from fw.dsl import load_ruleset
from fw.engine.routing import Routing
from fw.errors import FwlabError
from fw.model import RuleSet

CLASS_TITLES = {
    "tcp_syn": "TCP SYN (connection attempts)",
    "tcp_any": "TCP, any flags (ACK/FIN/RST probes too)",
    "udp": "UDP",
    "icmp": "ICMP / ICMPv6",
}
ENGINE_TITLES = {"fwlab": "fwlab's engine", "kernel": "Linux (exported to nft)"}
SHOWN_RANGES = 6
DIFFERENCE_STATUS = 3


class PlotError(FwlabError):
    """The chart cannot be written (unknown format, no matplotlib, unwritable path)."""


@dataclass
class Result:
    file: str
    exposure: Exposure
    lives: dict[str, dict] = field(default_factory=dict)  # engine -> what it let through

    @property
    def live(self) -> dict | None:
        """The first engine's measurement (the only one unless --engine names both)."""
        return next(iter(self.lives.values()), None)

    def json(self) -> dict:
        return {"file": self.file, "mode": self.exposure.mode,
                "static": {name: class_json(self.exposure, c)
                           for name, c in self.exposure.classes().items()},
                "after": list(self.exposure.after),
                "live": self.live, **({"live_by_engine": self.lives} if self.lives else {})}


def loaded(path: str, routing: Routing) -> RuleSet:
    ruleset = load_ruleset(path)
    warn_unknown_interfaces(ruleset, routing)
    return ruleset


def run_exposure(files: list[str], *, inside: str | None = None, outside: str | None = None,
                 topology: str | None = None, as_json: bool = False, plot: str | None = None,
                 live: bool = False, ports: str = "1-65535", engine: str | None = None,
                 after: list[str] | None = None) -> int:
    if plot is not None:
        check_plot_path(plot)
    routing = routing_from(topology)
    results = [Result(f, analyse(loaded(f, routing), routing, inside=inside, outside=outside,
                                 after=after or ()))
               for f in files]
    differences: list[str] = []
    verdicts: list[Text] = []  # per rule file: measured = computed, or where they differ
    engines = engine_list(engine, live)
    probed = port_span(ports) if engines else (1, 65535)
    for name in engines:
        measured = live_exposure([r.exposure for r in results], files, topology=topology,
                                 ports=probed, quiet=as_json, engine=name)
        for result, got in zip(results, measured, strict=True):
            result.lives[name] = got
            differ = compare_live(result, got, probed)
            differences += differ
            verdicts += live_verdict(result.file, differ, got, name)
    chart = write_plot(results, plot) if plot is not None else None
    if as_json:
        print_json({"rulesets": [r.json() for r in results],
                    **({"chart": chart} if chart else {}),
                    **({"differences": differences} if live else {})})
    else:
        stdout.print(table(results))
        for line in verdicts:
            stdout.print(line)
        if chart:
            stdout.print(f"chart: {chart}")
    return DIFFERENCE_STATUS if differences else 0


# -- live (issue 5's lab) --------------------------------------------------------------------

def engine_list(text: str | None, live: bool) -> list[str]:
    """`--engine fwlab`, `kernel` or `fwlab,kernel`: the firewalls `--live` measures, in order."""
    from fw.lab.kernel_engine import ENGINES

    if text is None:
        return ["fwlab"] if live else []
    if not live:
        raise FwlabError(f"--engine {text}: the engine is measured with --live")
    names = [name.strip() for name in text.split(",")]
    if not names or any(name not in ENGINES for name in names) or len(set(names)) < len(names):
        raise FwlabError(f"--engine {text!r}: fwlab, kernel, or both as fwlab,kernel")
    return names


def port_span(text: str) -> tuple[int, int]:
    """`--ports 32760-32780`: the destination ports the live probes sweep (all by default)."""
    lo, _, hi = text.partition("-")
    try:
        span = (int(lo), int(hi or lo))
    except ValueError:
        raise FwlabError(f"--ports {text!r}: give a port or a range, e.g. 32760-32780") from None
    if not 1 <= span[0] <= span[1] <= 65535:
        raise FwlabError(f"--ports {text!r}: ports run from 1 to 65535, low first")
    return span


def live_exposure(exposures: list[Exposure], files: list[str], *, topology: str | None,
                  ports: tuple[int, int] = (1, 65535), quiet: bool = False,
                  engine: str = "fwlab") -> list[dict]:
    """Measure in the lab (fw/lab/exposure_live.py): per file {CLASS: {"count", "ranges"}} for
    the classes probed (TCP SYN, TCP ACK, UDP), plus what was sent and through which engine."""
    from fw.lab.exposure_live import measure

    if quiet or not sys.stdout.isatty():
        return measure(exposures, files, topology=topology, ports=ports, engine=engine,
                       step=lambda text: None if quiet else stdout.print(text, style="dim"))
    with stdout.status("probing...") as status:
        return measure(exposures, files, topology=topology, ports=ports, engine=engine,
                       step=lambda text: status.update(text))


def live_verdict(file: str, differences: list[str], live: dict, engine: str) -> list[Text]:
    """One line a rule file when the lab agrees with the analysis, else one per difference."""
    if not differences:
        return [Text(f"{file}: measured = computed through {ENGINE_TITLES[engine]} "
                     f"({probed_text(live)})", style="bold green")]
    return [Text(f"difference: {line}", style="bold red") for line in differences]


def probed_text(live: dict) -> str:
    """What the lab sent: the classes, the ports, and from whom once a flow was open."""
    probe = live.get("probe", {})
    lo, _, hi = str(probe.get("ports", "")).partition("-")
    text = f"TCP SYN, TCP ACK, UDP, ICMP; ports {lo if lo == hi else probe.get('ports')}"
    if "senders" in live:
        pairs = [sender_of(key) for key in probe.get("senders", [])]
        addresses = ", ".join(dict.fromkeys(a for a, _ in pairs))
        ports = ", ".join(dict.fromkeys(str(p) for _, p in pairs if p is not None))
        text += f"; from {addresses}, each from ports {ports}"
    return text


def compare_live(result: Result, live: dict, ports: tuple[int, int] = (1, 65535)) -> list[str]:
    """Where measured and computed disagree, one line each: the classes probed, on the ports
    probed (the computed side is clipped to them), per sender once a flow is open."""
    if "senders" in live:
        return compare_senders(result, live, ports)
    out = []
    for name in ("tcp_syn", "tcp_any", "udp"):
        got = live.get(name)
        if got is None:
            continue
        computed = ranges.clip(result.exposure[name].ports, *ports)
        want = {"count": ranges.count(computed), "ranges": port_ranges_text(computed)}
        if got["count"] != want["count"] or got["ranges"] != want["ranges"]:
            by = f" through the {live['engine']}" if live.get("engine", "fwlab") != "fwlab" else ""
            out.append(f"{result.file}: {name}: computed {want['count']} "
                       f"({', '.join(want['ranges']) or 'none'}), measured{by} {got['count']} "
                       f"({', '.join(got['ranges']) or 'none'})")
    if live.get("icmp") is not None:
        want_types = icmp_types_text(probed_types(result.exposure["icmp"].types, live))
        out += differs(f"{result.file}: icmp", want_types, live["icmp"]["types"], live)
    return out


def probed_types(types: dict[int, ranges.Ranges], live: dict) -> dict[int, ranges.Ranges]:
    """The ICMP types computed, of those the lab sent."""
    sent = live.get("probe", {}).get("icmp_types", {})
    out = {}
    for family, held in types.items():
        part = ranges.inter(held, ranges.norm((t, t) for t in sent.get(str(family), [])))
        if part:
            out[family] = part
    return out


def differs(what: str, want: list[str], got: list[str], live: dict) -> list[str]:
    if want == got:
        return []
    by = f" through the {live['engine']}" if live.get("engine", "fwlab") != "fwlab" else ""
    return [f"{what}: computed {', '.join(want) or 'none'}, measured{by} "
            f"{', '.join(got) or 'none'}"]


def compare_senders(result: Result, live: dict, ports: tuple[int, int]) -> list[str]:
    """Once a flow is open: what each sender got in, against what the analysis says that
    sender reaches (fw/analysis/exposure_senders.py)."""
    from fw.analysis.exposure_senders import reach_from

    out = []
    for name, table in live["senders"].items():
        for key, got in table.items():
            address, sport = sender_of(key)
            if name == "icmp":
                family = 6 if ":" in address else 4
                reached = {family: reach_from(result.exposure, name, address)}
                want = icmp_types_text(probed_types(reached, live))
            else:
                reached = reach_from(result.exposure, name, address, sport or 0)
                want = port_ranges_text(ranges.clip(reached, *ports))
            out += differs(f"{result.file}: {name} from {key}", want, got, live)
    return out


def sender_of(key: str) -> tuple[str, int | None]:
    """`203.0.113.10:3478`, `[2001:db8::1]:3478`, or a bare address (ICMP)."""
    if key.startswith("["):
        address, _, port = key[1:].partition("]:")
        return address, int(port)
    if key.count(":") == 1:
        address, _, port = key.partition(":")
        return address, int(port)
    return key, None


# -- table -----------------------------------------------------------------------------------

def table(results: list[Result]) -> Table:
    out = Table(title="Exposure of the inside to unsolicited packets from the outside",
                show_lines=False)
    out.add_column("", style="bold", no_wrap=True)
    for r in results:
        out.add_column(f"{r.file}\n({r.exposure.mode})", overflow="fold")
    first = results[0].exposure.sides if results else None
    if first is not None:
        out.caption = (f"inside: {first.inside}, outside: {first.outside}; source ports and "
                       "addresses are the sender's choice")
        opened = results[0].exposure.after
        if opened:
            out.title = ("Exposure of the inside to packets from the outside, once the inside "
                         "has sent: " + "; ".join(opened))
    for name in CLASSES:
        out.add_row(Text(CLASS_TITLES[name], style="bold cyan"), *([""] * len(results)))
        rows = icmp_rows(results) if name == "icmp" else port_rows(results, name)
        for label, cells in rows:
            out.add_row(f"  {label}", *cells)
        for engine in dict.fromkeys(e for r in results for e in r.lives):
            out.add_row(f"  measured: {ENGINE_TITLES[engine]}",
                        *(measured_cell(r.lives.get(engine), name) for r in results))
    return out


def port_rows(results: list[Result], name: str) -> list[tuple[str, list]]:
    classes = [r.exposure[name] for r in results]
    return [
        ("ports exposed", [count_cell(c) for c in classes]),
        (f"share of {EPHEMERAL[0]}-{EPHEMERAL[1]}",
         [f"{c.ephemeral_share():.1%}" if c.exposed else "-" for c in classes]),
        ("port ranges", [short(port_ranges_text(c.ports)) for c in classes]),
        ("inside addresses", [addresses_cell(r.exposure, c) for r, c in
                              zip(results, classes, strict=True)]),
        ("sender: source", [sources_cell(c) for c in classes]),
        ("sender: source ports", [sport_cell(c) for c in classes]),
        ("port forwards", [forwards_cell(c) for c in classes]),
    ]


def icmp_rows(results: list[Result]) -> list[tuple[str, list]]:
    classes = [r.exposure["icmp"] for r in results]
    return [
        ("types let in", [short(icmp_types_text(c.types)) if c.exposed else
                          Text("none", style="green") for c in classes]),
        ("inside addresses", [addresses_cell(r.exposure, c) for r, c in
                              zip(results, classes, strict=True)]),
        ("sender: source", [sources_cell(c) for c in classes]),
    ]


def count_cell(c: ClassExposure) -> Text:
    if not c.exposed:
        return Text("0", style="bold green")
    return Text(f"{c.count:,}", style="bold red" if c.count > 100 else "bold yellow")


def short(items: list[str]) -> str:
    if not items:
        return "-"
    extra = len(items) - SHOWN_RANGES
    text = ", ".join(items[:SHOWN_RANGES])
    return text + (f", … (+{extra})" if extra > 0 else "")


def addresses_cell(exposure: Exposure, c: ClassExposure) -> str:
    return short([a for f, r in c.addresses.items() for a in inside_text(exposure, f, r)])


def sources_cell(c: ClassExposure) -> str:
    if not c.exposed:
        return "-"
    full = all(r == ((0, (1 << (32 if f == 4 else 128)) - 1),) for f, r in c.sources.items())
    if full:
        return "any"
    from fw.analysis.exposure_text import address_ranges_text

    return short([a for f, r in c.sources.items() for a in address_ranges_text(f, r)])


def sport_cell(c: ClassExposure) -> str:
    if not c.exposed:
        return "-"
    if c.source_ports == ((0, 65535),):
        return "any"
    return short(port_ranges_text(c.source_ports)) + " (sender's choice)"


def forwards_cell(c: ClassExposure) -> str:
    if not c.forwards:
        return "-"
    out = []
    for _, use in sorted(c.forwards.items()):
        to = forward_target(use.rule)
        ports = ",".join(port_ranges_text(use.dport)) or "*"
        out.append(f"{ports} → {to}")
    return short(out)


def forward_short(use) -> str:
    """A forward in a few words for the chart: a pool as its size and method."""
    ports = ",".join(port_ranges_text(use.dport)) or "*"
    pool = use.rule.pool
    if pool is None:
        return f"{ports} → {forward_target(use.rule)}"
    return f"{ports} → pool of {len(pool.members)} ({pool.method})"


def senders_text(c: ClassExposure) -> str:
    """Who may send: what tells the NAT filtering behaviours apart on the chart."""
    source = sources_cell(c)
    if c.source_ports == ((0, 65535),):
        return f"{source}, any port"
    return f"{source}, port {','.join(port_ranges_text(c.source_ports))}"


def measured_cell(live: dict | None, name: str) -> str:
    if not live or name not in live:
        return "-"
    got = live[name]
    key = "types" if name == "icmp" else "ranges"
    text = f"{got.get('count', 0):,}: {short(got.get(key, []))}"
    senders = live.get("senders", {}).get(name)
    if senders:  # once a flow is open: who got in, of the senders probed
        reached = [who for who, ports in senders.items() if ports]
        text += (f"; from {len(reached)} of {len(senders)} senders: {short(reached)}" if reached
                 else f"; from none of {len(senders)} senders")
    return text


# -- chart -----------------------------------------------------------------------------------

MEASURED_STYLE = {"fwlab": "#111111", "kernel": "#8e44ad"}

PLOT_CLASSES = (("tcp_syn", "TCP SYN", "#c0392b"), ("tcp_any", "TCP any", "#e67e22"),
                ("udp", "UDP", "#2980b9"))
MIN_WIDTH = 400  # ports: a single exposed port stays visible on a 65,536-port axis


def check_plot_path(path: str) -> None:
    if Path(path).suffix.lower() not in (".png", ".svg"):
        raise PlotError(f"--plot {path}: the chart is written as .png or .svg")
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise PlotError(f"--plot {path}: no such directory {parent}")


def mark_measured(ax, r: Result, name: str, y: float) -> str:
    """The ranges measured in the lab (each engine), as a thin bar under the computed one; the
    text for the right margin."""
    text = ""
    for k, (engine, live) in enumerate(r.lives.items()):
        got = live.get(name)
        if got is None:
            continue
        bars = [(lo, max(hi - lo + 1, MIN_WIDTH)) for lo, hi in parse_ranges(got["ranges"])]
        ax.broken_barh(bars, (y - 0.35 + 0.16 * k, 0.14), color=MEASURED_STYLE[engine], zorder=3,
                       label=f"measured in the lab ({ENGINE_TITLES[engine]})")
        text += f"; measured ({engine}) {got['count']:,}"
        senders = live.get("senders", {}).get(name)
        if senders:
            text += f" from {sum(bool(v) for v in senders.values())} of {len(senders)} senders"
    return text


def mark_probed(ax, results: list[Result]) -> None:
    """The ports the lab probed (--ports), when it did: outside them nothing was measured."""
    window = next((live["probe"]["ports"] for r in results for live in r.lives.values()
                   if "probe" in live), None)
    if window is None:
        return
    (lo, hi), = parse_ranges([window])
    ax.axvspan(lo, max(hi, lo + MIN_WIDTH // 2), color="#27ae60", alpha=0.25, zorder=1,
               label=f"probed in the lab: {window}")


def parse_ranges(texts: list[str]) -> list[tuple[int, int]]:
    """`32768-32780`, `80` (port_ranges_text's output) back to pairs."""
    out = []
    for text in texts:
        lo, _, hi = text.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def write_plot(results: list[Result], path: str) -> str:
    """The port axis 0-65535, one band per rule file and class; exposed ranges marked, the
    clients' ephemeral range shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # the plot extra is not installed
        raise PlotError(f"--plot needs matplotlib ({exc}), installed with fwlab's 'plot' extra: "
                        "pip install 'fwlab[plot]'") from None
    rows = [(r, name, label, colour) for r in results for name, label, colour in PLOT_CLASSES]
    height = 1.6 + 0.36 * len(rows)
    fig, ax = plt.subplots(figsize=(11, height))
    ax.axvspan(EPHEMERAL[0], EPHEMERAL[1], color="#dddddd", zorder=0,
               label=f"clients' ephemeral ports {EPHEMERAL[0]}-{EPHEMERAL[1]}")
    labels = []
    for y, (r, name, label, colour) in enumerate(reversed(rows)):
        c = r.exposure[name]
        bars = [(lo, max(hi - lo + 1, MIN_WIDTH)) for lo, hi in c.ports]
        ax.broken_barh(bars, (y - 0.35, 0.7), color=colour, zorder=2)
        if c.exposed and ranges.count(c.ports) <= 8:
            for lo, hi in c.ports:
                ax.annotate(port_ranges_text(((lo, hi),))[0], (lo + MIN_WIDTH, y),
                            xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        text = (f"{c.count:,} port{'s' if c.count != 1 else ''}" if c.exposed else "nothing")
        text += "".join(f"; {forward_short(use)}" for _, use in sorted(c.forwards.items()))
        if c.exposed and r.exposure.after:
            text += f", from {senders_text(c)}"
        text += mark_measured(ax, r, name, y)
        ax.text(65535, y, f"  {text}", va="center", fontsize=8)
        labels.append(f"{Path(r.file).name}  {label}")
    for k in range(1, len(results)):
        ax.axhline(k * len(PLOT_CLASSES) - 0.5, color="#888888", linewidth=0.6)
    mark_probed(ax, results)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, 65535)
    ax.set_ylim(-0.8, len(rows) - 0.2)
    ax.set_xlabel("destination port on the inside host")
    opened = results[0].exposure.after if results else ()
    title = "Ports an unsolicited packet from the outside reaches"
    if opened:
        title += "\nonce the inside has sent " + "; ".join(opened)
    ax.set_title(title, fontsize=10, loc="left")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))  # one entry per engine, not per band
    ax.legend(unique.values(), unique.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.18),
              ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise PlotError(f"--plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
