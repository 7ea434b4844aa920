"""python -m benchmarks: the suite against the peers (default), or the overhead report.

python -m benchmarks [--quick] [--out DIR] [--dir DIR]
python -m benchmarks overhead [--quick] [--json PATH] [--profile]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import overhead, suite
from .chart import draw
from .machine import describe
from .report import render

DOCS = Path(__file__).resolve().parent.parent / "docs"
REPORT = "benchmarks.md"
CHART = "benchmarks.png"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="lmdbstate against its peers: put, latest, history, verify, and latest() as "
        "the store grows. Writes docs/benchmarks.md and docs/benchmarks.png.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of everything in seconds; its report goes to a temporary directory "
        "unless --out is given",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write the report")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        metavar="DIR",
        help="where stores are written; needs a real disk, not tmpfs (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", title="commands")
    costs = commands.add_parser(
        "overhead", help="lmdbstate's put and latest against the same work on bare py-lmdb"
    )
    costs.add_argument("--quick", action="store_true", help="a fast smoke run")
    costs.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    costs.add_argument(
        "--profile", action="store_true", help="profile lmdbstate's put and latest instead"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "overhead":
        overhead.main(quick=args.quick, json_path=args.json, profile=args.profile)
        return 0
    plan = suite.QUICK if args.quick else suite.FULL
    out: Path = args.out or (
        Path(tempfile.mkdtemp(prefix="lmdbstate-bench-quick-")) if args.quick else DOCS
    )
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lmdbstate-bench-") as tmp:
        results = suite.run(plan, Path(tmp))
    missing = draw(results.results, out / CHART)
    chart = (
        f"![ops/s of each variant against state size]({CHART})"
        if missing is None
        else f"No chart: {missing}."
    )
    command = shlex.join(["python", "-m", "benchmarks", *argv])
    text = render(results, describe(args.dir), chart, command)
    (out / REPORT).write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out / REPORT}" + ("" if missing else f" and {out / CHART}"), file=sys.stderr)
    return 0


raise SystemExit(main(sys.argv[1:]))
