"""``lightweight-seg-train-all``: train every shipped model of the given bundles from scratch, several jobs at once
(one process each, on one GPU), in dependency order (a teacher before the students distilled from it), each to early
stopping with a time guard, resumable; weights, ``metrics.csv``, curves and a summary per run under ``--output``,
and with ``--install`` into the bundles where their configs expect them.

What to train comes from each bundle: ``configs/train_jobs.json`` lists its jobs (a bundle without one has one job,
``model``: ``configs/train.json`` into ``models/model.pt``). Per job:

* ``configs``: the bundle config files merged in order (e.g. ``["inference.json", "train.json", "distill.json"]``);
* ``weights``: where the bundle keeps its weights (``models/teacher.pt``); ``log``: its ``metrics.csv`` copy;
  ``curves`` (optional): its curve PNG;
* ``network`` (optional): ``FILE#KEY`` of another config of the bundle whose network this job trains
  (``distill.json#teacher_def``);
* ``teacher`` (optional): the job whose weights are ``teacher_file`` (the job runs after it);
* ``epochs_of`` (optional): the job whose epoch count this one trains, without early stopping (the same student
  without distillation, for a like-for-like comparison; it runs after it);
* ``overrides`` (optional): config overrides of this job (``{"network_def#pool_factors": [[2, 2, 1], ...]}``),
  applied before the command's ``--set``;
* ``experiment`` (optional): an ablation run, planned only with ``--experiments``; its weights go under
  ``experiments/`` (never ``models/``), and no shipped job may need it;
* ``evaluate`` (optional): after training, run the bundle's ``configs/evaluate.json`` with the job's network and
  weights (Dice and HD95 in mm on the validation split, at the images' own grid) into the summary;
* ``description``: one line for the summary and the model card.

A run lives in ``OUTPUT/<bundle>/<job>/seed<k>/`` (``job.json``, ``checkpoints/``, ``metrics.csv``,
``training_curves.png``, the weights, ``summary.json``, ``stderr.log``). Invoked again, a finished run is kept, an
unfinished one (killed, or cut by the time guard) resumes from its ``last.ckpt``. Stopping the runner (Ctrl-C,
SIGTERM) ends the jobs it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightweight_nets.io.files import atomic_path

__all__ = [
    "Job",
    "bundle_jobs",
    "job_overrides",
    "plan",
    "chain_depth",
    "is_finished",
    "run_all",
    "write_summary",
    "install",
    "main",
]

JOBS_CONFIG = Path("configs") / "train_jobs.json"
TRAINING_RECORD = "training_record"  # docs/training_record.json and .md in each bundle: how its weights were trained
DEFAULT_JOBS = {
    "model": {
        "configs": ["inference.json", "train.json"],
        "weights": "models/model.pt",
        "log": "logs/model.metrics.csv",
        "description": "configs/train.json",
    }
}


@dataclass
class Job:
    """One run: a bundle's job with one seed."""

    bundle: Path
    name: str
    seed: int
    spec: dict
    needs: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.bundle.name}/{self.name}/seed{self.seed}"

    def run_dir(self, output: Path) -> Path:
        return output / self.bundle.name / self.name / f"seed{self.seed}"


def bundle_jobs(root: Path) -> dict:
    path = root / JOBS_CONFIG
    if not path.is_file():
        return DEFAULT_JOBS
    try:
        jobs = json.loads(path.read_text())["jobs"]
    except (ValueError, KeyError) as error:
        raise ValueError(f"{path}: unreadable jobs ({error})") from None
    for name, spec in jobs.items():
        missing = {"configs", "weights"} - set(spec)
        needs = {spec.get("teacher"), spec.get("epochs_of")} - {None}
        unknown = needs - set(jobs)
        if missing or unknown:
            raise ValueError(
                f"{path}: job {name!r}: "
                + (f"no {', '.join(sorted(missing))}" if missing else f"unknown job {sorted(unknown)[0]!r}")
            )
        if spec.get("experiment") and not spec["weights"].startswith("experiments/"):
            raise ValueError(f"{path}: experiment {name!r} must write under experiments/, not {spec['weights']!r}")
        if not spec.get("experiment") and any(jobs[n].get("experiment") for n in needs):
            raise ValueError(f"{path}: job {name!r} needs an experiment; only experiments may")
    return jobs


def plan(bundles: list[Path], seeds: list[int], only: list[str] | None = None, experiments: bool = False) -> list[Job]:
    """Every job of every bundle for every seed, dependencies first; ``only`` keeps these job names (and what they
    need); experiment jobs only with ``experiments``."""
    jobs: list[Job] = []
    for root in bundles:
        specs = {n: s for n, s in bundle_jobs(root).items() if experiments or not s.get("experiment")}
        wanted = set(specs if not only else [n for n in specs if n in only])
        pending = list(wanted)
        while pending:  # what the wanted jobs need comes too
            spec = specs[pending.pop()]
            for dep in (spec.get("teacher"), spec.get("epochs_of")):
                if dep and dep not in wanted:
                    wanted.add(dep)
                    pending.append(dep)
        for seed in seeds:
            for name in _dependency_order(specs, wanted, root):
                spec = specs[name]
                needs = [f"{root.name}/{d}/seed{seed}" for d in (spec.get("teacher"), spec.get("epochs_of")) if d]
                jobs.append(Job(root, name, seed, spec, needs))
    return jobs


def _dependency_order(specs: dict, names: set[str], root: Path) -> list[str]:
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ValueError(f"{root / JOBS_CONFIG}: jobs depend on each other in a cycle: {' -> '.join(path)}")
        if name in ordered:
            return
        for dep in (specs[name].get("teacher"), specs[name].get("epochs_of")):
            if dep:
                visit(dep, (*path, name))
        ordered.append(name)

    for name in sorted(names):
        visit(name, ())
    return ordered


def chain_depth(jobs: list[Job]) -> int:
    """The longest chain of jobs that must run one after another (the time budget is split along it)."""
    depth: dict[str, int] = {}
    for job in jobs:  # dependencies come first
        depth[job.key] = 1 + max((depth[d] for d in job.needs), default=0)
    return max(depth.values(), default=0)


def is_finished(summary: dict, max_epochs: int | None) -> bool:
    """A run that stopped early, diverged (its last checkpoint's weights are not finite: resuming would learn
    nothing), or reached the epochs asked for now; one cut by the time guard is not."""
    if summary.get("stopped") in ("early_stopping", "non_finite_loss"):
        return True
    return summary.get("stopped") == "max_epochs" and (max_epochs is None or summary["epochs"] >= max_epochs)


def _read_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _job_file(job: Job, args: argparse.Namespace, output: Path, done: dict[str, dict], max_time_s: int) -> Path:
    """Write the job's settings (what the worker runs, kept beside the run for the record)."""
    spec, run_dir = job.spec, job.run_dir(output)
    overrides = {**job_overrides(job.bundle, spec), **dict(args.set)}
    if spec.get("teacher"):
        overrides["teacher_file"] = done[f"{job.bundle.name}/{spec['teacher']}/seed{job.seed}"]["weights"]
    max_epochs, early_stopping = args.max_epochs, True
    if spec.get("epochs_of"):
        max_epochs = done[f"{job.bundle.name}/{spec['epochs_of']}/seed{job.seed}"]["epochs"]
        early_stopping = False
    settings = {
        "bundle": str(job.bundle.resolve()),
        "name": job.name,
        "seed": job.seed,
        "tag": job.key,
        "description": spec.get("description", ""),
        "configs": spec["configs"],
        "overrides": overrides,
        "target": spec["weights"],
        "weights_name": Path(spec["weights"]).name,
        "run_dir": str(run_dir.resolve()),
        "max_epochs": max_epochs,
        "early_stopping": early_stopping,
        "evaluate": bool(spec.get("evaluate")),
        "max_time_s": max_time_s,
        "precision": args.precision,
        "device_data": not args.host_data,
        "channels_last": True,
        "num_workers": args.num_workers,
        "limit": args.limit,
        "data_root": str(Path(args.data_root).resolve()) if args.data_root else None,
        "command": shlex.join(["lightweight-seg-train-all", *args.argv]),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "job.json") as tmp:
        tmp.write_text(json.dumps(settings, indent=1) + "\n")
    return run_dir / "job.json"


def job_overrides(bundle: Path, spec: dict) -> dict:
    """A job's config overrides as ``train_jobs.json`` gives them (``spec``), with its ``network`` (``FILE#KEY`` of
    another config of the bundle) as the ``network_def`` override."""
    overrides = dict(spec.get("overrides", {}))
    if spec.get("network"):
        file, _, key = spec["network"].partition("#")
        overrides["network_def"] = _config_item(bundle / "configs" / file, key)
    return overrides


def _config_item(path: Path, key: str):
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_file(str(path))
    for part in key.split("#"):
        if part not in config:
            raise ValueError(f"{path}: no item {key!r}")
        config = config[part]
    return config


def run_all(jobs: list[Job], args: argparse.Namespace, output: Path) -> dict[str, dict]:
    """Run the jobs, up to ``args.jobs`` at once, each after what it needs; returns the summaries by job key.
    A failed job is reported with the end of its ``stderr.log`` and the jobs that need it are skipped."""
    depth = chain_depth(jobs)
    max_time_s = int(args.budget_minutes * 60 / depth) if depth else 0
    print(
        f"{len(jobs)} jobs, longest chain {depth}: each job stops by {max_time_s / 60:.1f} min at the latest",
        flush=True,
    )
    done: dict[str, dict] = {}
    failed: set[str] = set()
    running: dict[str, tuple[Job, subprocess.Popen]] = {}
    waiting = list(jobs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        while waiting or running:
            for job in list(waiting):
                if any(d in failed for d in job.needs):
                    waiting.remove(job)
                    failed.add(job.key)
                    print(f"[{job.key}] skipped: it needs {', '.join(d for d in job.needs if d in failed)}", flush=True)
                    continue
                if len(running) >= args.jobs or not all(d in done for d in job.needs):
                    continue
                waiting.remove(job)
                run_dir = job.run_dir(output)
                job_file = _job_file(job, args, output, done, max_time_s)
                summary = _read_summary(run_dir)
                if summary and is_finished(summary, json.loads(job_file.read_text())["max_epochs"]):
                    print(
                        f"[{job.key}] already finished ({summary['epochs']} epochs, {summary['stopped']})", flush=True
                    )
                    done[job.key] = summary
                    continue
                resumes = (run_dir / "checkpoints" / "last.ckpt").is_file()
                with open(run_dir / "stderr.log", "a") as log:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "lightweight_nets.training.train_job", str(job_file)],
                        stderr=log,
                        env=env,
                    )
                running[job.key] = (job, process)  # before anything else, so that a stop from now on ends it
                print(
                    f"[{job.key}] {'resumes from last.ckpt' if resumes else 'starts'} (process {process.pid})",
                    flush=True,
                )
            for key, (job, process) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[key]
                summary = _read_summary(job.run_dir(output))
                if process.returncode == 0 and summary:
                    done[key] = summary
                else:
                    failed.add(key)
                    tail = (job.run_dir(output) / "stderr.log").read_text().splitlines()[-15:]
                    print(
                        f"[{key}] FAILED (exit {process.returncode}); end of {job.run_dir(output) / 'stderr.log'}:\n  "
                        + "\n  ".join(tail),
                        flush=True,
                    )
            time.sleep(0.5)
    finally:
        _stop_jobs(running)
    return done


def _stop_jobs(running: dict[str, tuple[Job, subprocess.Popen]]) -> None:
    """End the jobs still running when the runner stops early (Ctrl-C, SIGTERM, an error), so that none goes on
    writing into its run folder unwatched; each keeps its last checkpoint, and running the command again resumes it."""
    for _, process in running.values():
        if process.poll() is None:
            process.terminate()
    for key, (_, process) in running.items():
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"[{key}] stopped with the runner (resumes from its last checkpoint)", flush=True)


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds run_all, which ends its jobs


def write_summary(summaries: list[dict], output: Path, stem: str = "summary") -> Path:
    """``<stem>.json`` (every run) and ``<stem>.md`` (a table, and mean +- std over seeds) in ``output``."""
    with atomic_path(output / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(summaries, indent=1) + "\n")
    lines = [
        "| bundle | job | seed | epochs | stopped by | best epoch | val_loss | val_dice | minutes | device |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['bundle']} | {s['job']} | {s['seed']} | {s['epochs']} | {s['stopped']} | "
            f"{s.get('best_epoch', '-')} | {s.get('val_loss', float('nan')):.4f} | "
            f"{s.get('val_dice', float('nan')):.4f} | {s['minutes']:.1f} | {s['device']} |"
        )
    groups: dict[tuple[str, str], list[float]] = {}
    for s in summaries:
        groups.setdefault((s["bundle"], s["job"]), []).append(s.get("val_dice", float("nan")))
    if any(len(v) > 1 for v in groups.values()):
        lines += ["", "| bundle | job | seeds | best val_dice, mean +- std |", "|---|---|---:|---:|"]
        lines += [
            f"| {b} | {j} | {len(v)} | {statistics.mean(v):.4f} +- {statistics.stdev(v):.4f} |"
            for (b, j), v in groups.items()
            if len(v) > 1
        ]
    lines += _evaluation_table(summaries)
    commands = sorted({s["command"] for s in summaries})
    text = "\n".join(["# Training runs", "", *(f"`{c}`" for c in commands), "", *lines]) + "\n"
    with atomic_path(output / f"{stem}.md") as tmp:
        tmp.write_text(text)
    return output / f"{stem}.md"


def _evaluation_table(summaries: list[dict]) -> list[str]:
    """Rows of the runs evaluated with their bundle's evaluate.json: Dice and HD95 (mm) per label, mean +- std over
    the validation volumes (``evaluate_volumes``' summary) or images (a 2D model's ``evaluate``: one foreground)."""
    rows = []
    for s in summaries:
        evaluation = s.get("evaluation") or {}
        dice_by_label, hd95_by_label = evaluation.get("dice", {}), evaluation.get("hd95_mm", {})
        if "mean" in dice_by_label:  # a 2D model's evaluation: one foreground, HD95 in mm under "hd95"
            dice_by_label, hd95_by_label = {"foreground": dice_by_label}, {"foreground": evaluation.get("hd95", {})}
        for label, dice in dice_by_label.items():
            hd95 = hd95_by_label.get(label, {})
            rows.append(
                f"| {s['bundle']} | {s['job']} | {s['seed']} | {label} | {_mean_std(dice)} | {_mean_std(hd95)} | "
                f"{dice.get('n', '-')} |"
            )
    if not rows:
        return []
    title = "Validation split, the bundle's evaluate.json (the volumes' own grid):"
    header = "| bundle | job | seed | label | Dice, mean +- std | HD95 (mm), mean +- std | volumes |"
    return ["", title, "", header, "|---" * 7 + "|", *rows]


def _mean_std(metric: dict) -> str:
    return "-" if metric.get("mean") is None else f"{metric['mean']:.4f} +- {metric['std']:.4f}"


def install(jobs: list[Job], summaries: dict[str, dict], output: Path, seed: int) -> list[Path]:
    """Copy one seed's weights, ``metrics.csv`` and curves where each bundle's jobs file puts them, and record how
    the bundle's installed weights were trained in ``docs/training_record.json`` and ``.md`` (command, epochs, how
    each stopped), for its model card: a job installed now replaces its earlier row, the other jobs' rows stay."""
    written = []
    for root in sorted({job.bundle for job in jobs}):
        records = []
        for job in (j for j in jobs if j.bundle == root and j.seed == seed and j.key in summaries):
            run_dir, spec = job.run_dir(output), job.spec
            pairs = [
                (run_dir / Path(spec["weights"]).name, spec["weights"]),
                (run_dir / "metrics.csv", spec.get("log")),
                (run_dir / "training_curves.png", spec.get("curves")),
            ]
            for source, target in pairs:
                if target and source.is_file():
                    (root / target).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, root / target)
                    written.append(root / target)
            records.append(summaries[job.key])
        docs = root / "docs"
        docs.mkdir(parents=True, exist_ok=True)
        earlier = docs / f"{TRAINING_RECORD}.json"
        installed_now = {record["job"] for record in records}
        kept = json.loads(earlier.read_text()) if earlier.is_file() else []
        kept = [record for record in kept if record["job"] not in installed_now]
        written += [earlier, write_summary(sorted(kept + records, key=_record_order), docs, TRAINING_RECORD)]
    return written


def _record_order(summary: dict) -> tuple:
    """The shipped weights' rows (``models/``) first, then the experiments, each by job name."""
    return not str(summary.get("target", "")).startswith("models/"), summary["job"], summary["seed"]


def _bundle_roots(paths: list[str]) -> list[Path]:
    from lightweight_nets.bundle import find_bundles

    return [spec.root for path in paths for spec in find_bundles(path)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="lightweight-seg-train-all", description=__doc__.splitlines()[0])
    parser.add_argument(
        "bundles", nargs="*", default=["bundle"], help="bundles or folders of bundles (default: bundle/)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="where the runs go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of every job per seed")
    parser.add_argument("--only", nargs="+", metavar="JOB", help="these jobs of each bundle (and what they need)")
    parser.add_argument(
        "--experiments",
        action="store_true",
        help="also the bundles' experiment jobs (ablations into experiments/, evaluated on the validation split)",
    )
    parser.add_argument("--jobs", type=int, default=4, help="jobs running at once (default 4)")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=10.0,
        help="wall time for the whole plan: each job stops by budget / longest chain (default 10)",
    )
    parser.add_argument("--max-epochs", type=int, help="override the bundles' max_epochs")
    parser.add_argument("--precision", help="Lightning precision (default: bf16-mixed on a GPU, 32-true on a CPU)")
    parser.add_argument("--num-workers", type=int, default=2, help="data loader / decoding workers per job")
    parser.add_argument("--limit", type=int, help="at most this many items of each split part (quick runs)")
    parser.add_argument("--data-root", help="read each bundle's dataset from DATA_ROOT/<its folder name>")
    parser.add_argument(
        "--host-data",
        action="store_true",
        help="keep the bundles' own 2D data modules (CPU augmentation) instead of the device data module",
    )
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "JSON"),
        help="a config override for every job, e.g. --set preprocessing#spatial_size '[64, 64]'",
    )
    parser.add_argument("--install", action="store_true", help="copy the first seed's results into the bundles")
    parser.add_argument(
        "--install-only",
        action="store_true",
        help="train nothing: install the runs already in --output (e.g. unpacked from a GPU machine)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        args.set = [(key, json.loads(value)) for key, value in args.set]
    except ValueError as error:
        parser.error(f"--set: not JSON ({error})")
    if args.precision is None:
        import torch

        args.precision = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    try:
        jobs = plan(_bundle_roots(args.bundles), args.seeds, args.only, args.experiments)
    except ValueError as error:
        print(f"lightweight-seg-train-all: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        for job in jobs:
            print(
                f"{job.key}: {' + '.join(job.spec['configs'])} -> {job.spec['weights']}"
                + (f" (after {', '.join(job.needs)})" if job.needs else "")
            )
        return 0
    output = args.output
    output.mkdir(parents=True, exist_ok=True)
    if args.install_only:
        summaries = {job.key: _read_summary(job.run_dir(output)) for job in jobs}
        summaries = {key: summary for key, summary in summaries.items() if summary}
        args.install = True
    else:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            summaries = run_all(jobs, args, output)
        finally:
            signal.signal(signal.SIGTERM, previous)
    ordered = [summaries[j.key] for j in jobs if j.key in summaries]
    print(f"summary: {write_summary(ordered, output)}", flush=True)
    if args.install:
        for path in install(jobs, summaries, output, args.seeds[0]):
            print(f"installed {path}")
    return 0 if len(summaries) == len(jobs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
