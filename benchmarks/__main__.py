"""Run every benchmark section, print one table, optionally write every figure as JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import agent_runtime, codec, exchange, llm, market, mechanism, scale_out
from benchmarks.timing import Figure

# Sections that need optional packages, and the install that brings them.
NEEDS = {"llm": (("torch", "transformers", "tokenizers"), 'pip install torch==2.13.0 && pip install -e ".[llm]"')}

SECTIONS = {
    "mechanism": mechanism.run,
    "codec": codec.run,
    "market": market.run,
    "exchange": exchange.run,
    "agents": agent_runtime.run,
    "scale-out": scale_out.run,
    "llm": llm.run,
}


def missing_packages(section: str) -> list[str]:
    """The packages ``section`` needs that are not installed."""
    packages, _ = NEEDS.get(section, ((), ""))
    return [package for package in packages if importlib.util.find_spec(package) is None]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast check")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only these sections")
    args = parser.parse_args()
    console = Console()
    figures: list[Figure] = []
    for name in args.only or SECTIONS:
        missing = missing_packages(name)
        if missing:
            console.print(f"[yellow]skipped {name}[/yellow]: needs {', '.join(missing)} ({NEEDS[name][1]})")
            continue
        with console.status(f"benchmark: {name}"):
            figures.extend(SECTIONS[name](args.quick))
    table = Table(
        title=f"token-auction benchmarks ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()})"
    )
    for column in ("section", "figure", "value", "key"):
        table.add_column(column)
    for f in figures:
        table.add_row(f.section, f.label, f"{f.value:,.3g} {f.unit}", f.key)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({f.key: f.value for f in figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
