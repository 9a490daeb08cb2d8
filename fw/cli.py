"""The `fwlab` command: thin typer wrappers around fw.commands; errors become one line, exit 2."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from typing import Annotated

import typer

from fw.commands.options import IfaceOpt, JsonOpt, RulesArg, TopologyOpt
from fw.commands.output import stderr
from fw.errors import FwlabError

# rich_markup_mode=None: click's own help layout, where a flag is a flag (`--json`); the rich
# panels of typer 0.29 print every flag as taking a value (`--json <bool>`).
app = typer.Typer(
    help="fwlab: see what a stateless and a stateful firewall let through, on real traffic.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Dependencies only some commands need (pyproject.toml's extras): `pip install fwlab` gives
# check, explain, replay, export, import and static exposure anywhere.
EXTRAS = {"pyroute2": "lab", "netfilterqueue": "lab", "numpy": "lab", "matplotlib": "plot"}


def show_version(value: bool) -> None:
    if value:
        print(f"fwlab {version('fwlab')}")
        raise typer.Exit()


@app.callback()
def fwlab(
    _version: Annotated[bool | None, typer.Option(
        "--version", callback=show_version, is_eager=True, help="Print fwlab's version.")] = None,
) -> None:
    """fwlab: see what a stateless and a stateful firewall let through, on real traffic."""


@app.command()
def check(
    files: Annotated[list[str], typer.Argument(help="Rule files (.fw) to check.")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 1) on warnings too.")
                      ] = False,
    topology: Annotated[str | None, typer.Option(
        help="Topology file whose firewall interfaces the rules may name (default: the "
             "default lab); given, also warn of pool members on none of its segments.")] = None,
    exact: Annotated[bool, typer.Option(
        "--exact",
        help="Also find rules that several earlier rules cover together (symbolic; slower).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check rule files: errors and warnings with file, line and column."""
    from fw.commands.check import run_check

    raise typer.Exit(run_check(files, strict=strict, as_json=as_json, topology=topology,
                               exact=exact))


@app.command()
def fmt(
    file: Annotated[str, typer.Argument(help="Rule file (.fw).")],
    check: Annotated[bool, typer.Option(
        "--check", help="Print nothing; exit 1 when the file is not formatted.")] = False,
) -> None:
    """Print a rule file in one style: aligned, sets sorted, comments kept (like terraform fmt)."""
    from fw.commands.fmt import run_fmt

    raise typer.Exit(run_fmt(file, check=check))


@app.command()
def explain(
    rules: RulesArg,
    packet: Annotated[str, typer.Argument(
        help="The packet, e.g. 'tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags S'.")],
    after: Annotated[list[str] | None, typer.Option(
        "--after", help="An earlier packet of the flow, replayed first (repeatable).")] = None,
    hook: Annotated[str, typer.Option(help="prerouting, input, forward or output.")] = "prerouting",
    iif: IfaceOpt = None,
    oif: IfaceOpt = None,
    topology: TopologyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Explain the verdict for one packet: the chain, the deciding rule, every rule tried."""
    from fw.commands.explain import run_explain

    raise typer.Exit(run_explain(rules, packet, after=after or [], hook=hook, iif=iif, oif=oif,
                                 topology=topology, as_json=as_json))


@app.command()
def replay(
    rules: RulesArg,
    capture: Annotated[str, typer.Argument(help="pcap/pcapng, as packets reach the firewall.")],
    out: Annotated[str | None, typer.Option(help="Write accepted packets, as they leave.")] = None,
    topology: TopologyOpt = None,
    rows: Annotated[int, typer.Option(help="Packets shown in the table (0: all).")] = 200,
    nat: Annotated[bool, typer.Option(
        "--nat", help="Show the NAT mapping table at the end (JSON: a last nat_mappings line).")
    ] = False,
    as_json: JsonOpt = False,
    workers: Annotated[int, typer.Option(
        min=1, max=16, help="Processes judging the capture, its flows shared out among them "
                            "(the output is the same for any number).")] = 1,
) -> None:
    """Replay a capture through a rule set: a verdict per packet, totals, hits per rule."""
    from fw.commands.replay import run_replay

    status = run_replay(rules, capture, out=out, topology=topology, as_json=as_json, rows=rows,
                        nat=nat, workers=workers)
    raise typer.Exit(status)


@app.command()
def exposure(
    files: Annotated[list[str], typer.Argument(help="Rule files (.fw), shown side by side.")],
    inside: Annotated[str | None, typer.Option(
        help="The inside: an interface or an address prefix (default: lan).")] = None,
    outside: Annotated[str | None, typer.Option(
        help="The interface unsolicited packets arrive on (default: wan).")] = None,
    topology: TopologyOpt = None,
    plot: Annotated[str | None, typer.Option(
        help="Write a chart of the exposed ports (.png or .svg).")] = None,
    live: Annotated[bool, typer.Option(
        "--live",
        help="Also measure in the lab (root); exit 3 when measured and computed differ.")
    ] = False,
    ports: Annotated[str, typer.Option(
        help="Destination ports the live probes sweep, e.g. 32760-32780.")] = "1-65535",
    engine: Annotated[str | None, typer.Option(
        help="The firewall --live measures: fwlab (the engine, default), kernel (the exported "
        "rules in nftables) or fwlab,kernel (both, side by side).")] = None,
    after: Annotated[list[str] | None, typer.Option(
        "--after", help="A packet an inside host sends first (repeatable): what the state it "
        "leaves (connection, NAT mapping) lets in counts too.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which unsolicited packets from the outside reach the inside: ports, hosts, senders."""
    from fw.commands.exposure import run_exposure

    raise typer.Exit(run_exposure(files, inside=inside, outside=outside, topology=topology,
                                  as_json=as_json, plot=plot, live=live, ports=ports,
                                  engine=engine, after=after))


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="The first rule file (.fw).")],
    b: Annotated[str, typer.Argument(help="The second rule file (.fw).")],
    topology: TopologyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The packets two rule sets treat differently; exit 0 if none, 1 if some, 2 on error."""
    from fw.commands.diff import run_diff

    raise typer.Exit(run_diff(a, b, topology=topology, as_json=as_json))


OutOpt = Annotated[str | None, typer.Option("-o", "--out", help="Write here (default: stdout).")]


@app.command()
def export(
    rules: RulesArg,
    out: OutOpt = None,
    approximate: Annotated[bool, typer.Option(
        "--approximate",
        help="Export NAT behaviours the kernel cannot give as its nearest one (with a warning)."
    )] = False,
) -> None:
    """Print the nftables script (`nft -f`) that means the same as a rule file."""
    from fw.commands.export import run_export

    raise typer.Exit(run_export(rules, out=out, approximate=approximate))


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(
        help="nft text, or the JSON of `nft -j list ruleset`; - for standard input.")],
    out: OutOpt = None,
    skip_unsupported: Annotated[bool, typer.Option(
        "--skip-unsupported",
        help="Leave out rules fwlab cannot express (each named in a comment) instead of failing."
    )] = False,
) -> None:
    """Print the rule file (.fw) that means the same as an nftables rule set."""
    from fw.commands.importer import run_import

    raise typer.Exit(run_import(source, out=out, skip_unsupported=skip_unsupported))


from fw.commands.lab import register as _register_lab  # noqa: E402
from fw.commands.lb import lb as _lb  # noqa: E402

_register_lab(app)
app.command("lb")(_lb)


def _register_operations(app: typer.Typer) -> None:
    """Commands that operate a running lab as one operates a firewall (issue 16)."""
    from fw.commands.attach import attach, detach
    from fw.commands.capture import capture
    from fw.commands.labs import list_
    from fw.commands.trace import trace

    app.command("attach")(attach)
    app.command("detach")(detach)
    app.command("list")(list_)
    app.command("capture")(capture)
    app.command("trace")(trace)


_register_operations(app)


def main() -> None:
    try:
        app(prog_name="fwlab")  # also as `python -m fw`: its help and completion say fwlab
    except FwlabError as exc:
        stderr.print(f"fwlab: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        stderr.print(f"fwlab: this command needs {exc.name}, installed with fwlab's '{extra}' "
                     f"extra: pip install 'fwlab[{extra}]' (scripts/setup installs every extra)",
                     markup=False, highlight=False)
        sys.exit(2)
    except Exception as exc:  # a bug: still one line for the user, the traceback on request
        if os.environ.get("FWLAB_DEBUG"):
            raise
        stderr.print(f"fwlab: internal error: {type(exc).__name__}: {exc} "
                     "(run with FWLAB_DEBUG=1 for the traceback)", markup=False)
        sys.exit(70)
