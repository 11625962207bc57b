"""``python -m benchmarks [--quick]``: time every registered net on every CPU backend, write docs/benchmarks.md.

Raw results go to docs/benchmarks.json after each net (the end-to-end timings once all nets are done), so an
interrupted run keeps what it measured and ``--from-json`` rewrites the report from them without measuring again;
``--update --nets NAME ...`` re-measures some nets into the saved run (after a change that touches only them).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import NotACheckoutError, checkout, end_to_end, machine_line
from benchmarks.cpu import Case, NetResult, Timing, benchmark_net
from benchmarks.report import BASELINE, STUDENT, write_report
from lightweight_nets import list_nets
from lightweight_nets.io.files import atomic_path

FULL_CASES = (
    Case("2D", (1, 1, 256, 256), runs=30, warmup=3, threads=(1, 2), peak_rss=True),
    Case("3D", (1, 1, 64, 64, 64), runs=30, warmup=1, threads=(1, 2), peak_rss=True),
)
QUICK_CASES = (
    Case("2D", (1, 1, 256, 256), runs=10, warmup=2, threads=(2,), peak_rss=False),
    Case("3D", (1, 1, 64, 64, 64), runs=3, warmup=1, threads=(2,), peak_rss=False),
)


END_TO_END_AGAIN = "End to end re-measured"


def _load(path: Path) -> tuple[list[NetResult], list[dict] | None, str, str]:
    """Results, end-to-end rows (None in a run saved without them), environment and command saved by :func:`_save`."""
    saved = json.loads(path.read_text())
    results = []
    for item in saved["results"]:
        item["timings"] = [Timing(**t) for t in item["timings"]]
        results.append(NetResult(**item))
    return results, saved.get("end_to_end"), saved["environment"], saved["command"]


def _save(
    results: list[NetResult], end_to_end_rows: list[dict] | None, environment: str, command: str, path: Path
) -> None:
    saved = {"command": command, "environment": environment, "results": [asdict(r) for r in results]}
    if end_to_end_rows is not None:
        saved["end_to_end"] = end_to_end_rows
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(saved, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"only {STUDENT} and {BASELINE}, fewer runs, 2 threads only, no peak RSS"
    )
    parser.add_argument("--nets", nargs="+", default=None, help="registered net names (default: all)")
    parser.add_argument(
        "--markdown",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="report to write; charts go beside it (default: docs/benchmarks.md)",
    )
    parser.add_argument("--from-json", action="store_true", help="rewrite the report from the saved raw results")
    parser.add_argument(
        "--update",
        action="store_true",
        help="re-measure only --nets and put their results in the saved run in place of the old ones",
    )
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="re-measure only the end-to-end section (after a model or pipeline change), keep the nets' tables",
    )
    args = parser.parse_args(argv)
    raw = args.markdown.with_suffix(".json")
    command = " ".join(["python -m benchmarks", shlex.join(argv if argv is not None else sys.argv[1:])]).strip()
    if (args.update or args.end_to_end) and not raw.is_file():
        parser.error(f"--update and --end-to-end need a saved run ({raw}) to update")
    if args.update and not args.nets:
        parser.error("--update needs --nets")
    if args.end_to_end:
        results, _, environment, kept_command = _load(raw)
        started = datetime.now(UTC)
        end_to_end_rows = end_to_end.measure()
        environment = environment.split(END_TO_END_AGAIN)[0].rstrip()  # the last re-measurement replaces the one before
        environment = f"{environment} {END_TO_END_AGAIN} with `{command}`: {machine_line(started)}"
        _save(results, end_to_end_rows, environment, kept_command, raw)
        command = kept_command
    elif args.from_json:
        if not raw.is_file():
            parser.error(f"{raw}: no saved results to rewrite the report from")
        results, end_to_end_rows, environment, command = _load(raw)
    else:
        try:  # measured: the checkout's HC18 samples and bundles (an installed copy has neither)
            checkout("samples")
            checkout("bundle")
        except NotACheckoutError as error:
            sys.exit(f"error: {error}")
        # the student and the baseline first: an interrupted run still has the ratio the targets are about
        headline = [n for n in (STUDENT, BASELINE) if n in list_nets()]
        names = args.nets or (headline if args.quick else headline + [n for n in list_nets() if n not in headline])
        unknown = sorted(set(names) - set(list_nets()))
        if unknown:
            parser.error(f"unknown net(s) {', '.join(unknown)}; known: {', '.join(list_nets())}")
        measured, started = [], datetime.now(UTC)
        kept, _, kept_environment, kept_command = _load(raw) if args.update else ([], None, "", command)
        for name in names:
            measured.append(benchmark_net(name, QUICK_CASES if args.quick else FULL_CASES))
            new = {r.name: r for r in measured}
            results = [new.pop(r.name, r) for r in kept] + list(new.values())
            environment = machine_line(started)
            if args.update:
                environment = f"{kept_environment} Then {', '.join(names)} re-measured with `{command}`: {environment}"
            _save(results, None, environment, kept_command, raw)
        end_to_end_rows = end_to_end.measure()
        _save(results, end_to_end_rows, environment, kept_command, raw)
        command = kept_command
    for path in write_report(results, end_to_end_rows, args.markdown, environment, command):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
