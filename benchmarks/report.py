"""docs/benchmarks.md and its charts from the measured :class:`~benchmarks.cpu.NetResult` list."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from benchmarks import end_to_end  # noqa: E402
from benchmarks.cpu import MEASURED_BACKENDS, NetResult  # noqa: E402
from lightweight_nets.io.files import atomic_path  # noqa: E402
from lightweight_nets.profile import markdown_table  # noqa: E402

__all__ = ["STUDENT", "BASELINE", "TARGET_FPS", "TARGET_SPEEDUP", "fastest_backends", "write_report"]

STUDENT, BASELINE = "thin_separable_student", "unet"
TARGET_FPS, TARGET_SPEEDUP = 150.0, 40.0  # 2D 256x256, 2 cores, best backend
KEPT_HEADING = "## Measurements behind design choices"  # hand-written: why the code does what it does, in numbers
END_TO_END_HEADING = "## End to end"
BACKEND_TITLES = {
    "torch": "PyTorch eager",
    "torchscript": "TorchScript",
    "onnx": "ONNX Runtime",
    "onnx-int8": "ORT int8",
}


def fastest_backends(results: list[NetResult], case: str, threads: int) -> Counter:
    """How many nets each fp32 backend was fastest for (int8 left out: it changes the outputs)."""
    wins = Counter()
    for result in results:
        timings = [t for t in result.timings if t.case == case and t.threads == threads and t.backend != "onnx-int8"]
        if timings:
            wins[min(timings, key=lambda t: t.median_ms).backend] += 1
    return wins


def _cases(results: list[NetResult]) -> list[tuple[str, int]]:
    return sorted({(t.case, t.threads) for r in results for t in r.timings})


def _summary_table(results: list[NetResult], case: str, threads: int) -> str:
    header = [
        "net",
        "parameters",
        "GFLOPs",
        "weights (MiB)",
        *[f"{BACKEND_TITLES[b]} fps" for b in MEASURED_BACKENDS],
        "best",
        "best / eager",
    ]
    rows = []
    for r in results:
        if not any(t.case == case and t.threads == threads for t in r.timings):
            continue
        best, eager = r.best(case, threads), r.timing(case, threads, "torch")
        rows.append(
            [
                r.name,
                f"{r.parameters:,}",
                f"{r.gflops[case]:.2f}",
                f"{r.weight_mib:.2f}",
                *[f"{r.timing(case, threads, b).fps:.1f}" for b in MEASURED_BACKENDS],
                BACKEND_TITLES[best.backend],
                f"{best.fps / eager.fps:.1f}x",
            ]
        )
    return markdown_table(header, rows)


def _detail_table(results: list[NetResult], case: str) -> str:
    header = ["net", "threads", "backend", "median (ms)", "p95 (ms)", "fps", "runs", "peak RSS (MiB)"]
    rows = [
        [
            r.name,
            str(t.threads),
            BACKEND_TITLES[t.backend],
            f"{t.median_ms:.1f}",
            f"{t.p95_ms:.1f}",
            f"{t.fps:.1f}",
            str(len(t.latencies_ms)),
            f"{t.peak_rss_mib:.0f}" if t.peak_rss_mib else "-",
        ]
        for r in results
        for t in r.timings
        if t.case == case
    ]
    return markdown_table(header, rows)


def _ratios(results: list[NetResult]) -> str:
    """Student vs baseline on each one's fastest backend, fp32 only and with int8 allowed, in the same run."""
    by_name = {r.name: r for r in results}
    if STUDENT not in by_name or BASELINE not in by_name:
        return f"Needs both `{STUDENT}` and `{BASELINE}` in the run.\n"
    student, baseline = by_name[STUDENT], by_name[BASELINE]
    header = [
        "case",
        "threads",
        "backends",
        f"{STUDENT} best",
        "fps",
        f"{BASELINE} best",
        "fps",
        "speed-up",
        f"{STUDENT} best / eager",
    ]
    rows, verdicts = [], []
    for case, threads in _cases([student]):
        if not any(t.case == case and t.threads == threads for t in baseline.timings):
            continue
        eager = student.timing(case, threads, "torch")
        for fp32_only in (True, False):
            fast, slow = student.best(case, threads, fp32_only), baseline.best(case, threads, fp32_only)
            speedup = fast.fps / slow.fps
            rows.append(
                [
                    case,
                    str(threads),
                    "fp32" if fp32_only else "fp32 or int8",
                    BACKEND_TITLES[fast.backend],
                    f"{fast.fps:.1f}",
                    BACKEND_TITLES[slow.backend],
                    f"{slow.fps:.1f}",
                    f"{speedup:.1f}x",
                    f"{fast.fps / eager.fps:.1f}x",
                ]
            )
            if case == "2D" and not fp32_only:
                verdicts += [
                    f"- {threads} thread(s): target >= {TARGET_FPS:.0f} fps on the best backend: "
                    f"{fast.fps:.1f} fps, **{'met' if fast.fps >= TARGET_FPS else 'not met'}**; "
                    f"target >= {TARGET_SPEEDUP:.0f}x the Li et al. U-net (each on its best backend): "
                    f"{speedup:.1f}x, **{'met' if speedup >= TARGET_SPEEDUP else 'not met'}**"
                ]
    return markdown_table(header, rows) + "\n" + "\n".join(verdicts) + "\n"


def _accuracy_table(results: list[NetResult]) -> str:
    header = [
        "net",
        "weights",
        "images",
        "int8 vs fp32 Dice",
        "int8 vs fp32 pixels equal",
        "fp32 Dice (ref.)",
        "int8 Dice (ref.)",
    ]
    rows = [
        [
            r.name,
            r.weights,
            str(r.accuracy["images"]),
            f"{r.accuracy['int8_vs_fp32_dice']:.4f}",
            f"{100 * r.accuracy['int8_vs_fp32_pixel_agreement']:.2f}%",
            f"{r.accuracy['fp32_dice']:.4f}",
            f"{r.accuracy['int8_dice']:.4f}",
        ]
        for r in results
        if r.accuracy
    ]
    return markdown_table(header, rows)


def _fps_chart(results: list[NetResult], path: Path) -> None:
    """fps against parameters (log-log), 2D 2 threads: eager and the best backend of each net."""
    measured = [r for r in results if any(t.case == "2D" and t.threads == 2 for t in r.timings)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(
        [r.parameters for r in measured],
        [r.timing("2D", 2, "torch").fps for r in measured],
        marker="o",
        label="PyTorch eager",
    )
    ax.scatter(
        [r.parameters for r in measured], [r.best("2D", 2).fps for r in measured], marker="^", label="best backend"
    )
    for r in measured:
        ax.annotate(r.name, (r.parameters, r.best("2D", 2).fps), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(TARGET_FPS, color="grey", linestyle="--", linewidth=0.8, label=f"{TARGET_FPS:.0f} fps target")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters",
        ylabel="frames per second (1x1x256x256, 2 threads)",
        title="CPU throughput vs size",
    )
    ax.legend(fontsize=8)
    _save(fig, path)


def _accuracy_chart(results: list[NetResult], path: Path) -> bool:
    """Dice on the held-out HC18 samples against best-backend fps, for nets with trained weights; False if none."""
    trained = [
        r
        for r in results
        if r.accuracy and r.weights.startswith("trained") and any(t.case == "2D" and t.threads == 2 for t in r.timings)
    ]
    if not trained:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in trained:
        fp32 = r.best("2D", 2) if r.best("2D", 2).backend != "onnx-int8" else r.timing("2D", 2, "onnx")
        ax.scatter(fp32.fps, r.accuracy["fp32_dice"], marker="o", color="C0")
        ax.scatter(r.timing("2D", 2, "onnx-int8").fps, r.accuracy["int8_dice"], marker="x", color="C1")
        ax.annotate(r.name, (fp32.fps, r.accuracy["fp32_dice"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.scatter([], [], marker="o", color="C0", label="fp32, fastest fp32 backend")
    ax.scatter([], [], marker="x", color="C1", label="ONNX Runtime int8")
    ax.set(
        xlabel="frames per second (1x1x256x256, 2 threads)",
        ylabel="Dice (held-out HC18 samples)",
        title="Accuracy vs speed (trained weights)",
    )
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _existing_section(markdown: Path, heading: str) -> list[str]:
    """The section ``heading`` of an existing report (up to the next heading of its level), or [] where there is
    none."""
    text = markdown.read_text() if markdown.is_file() else ""
    start = text.find(f"{heading}\n")
    if start < 0:
        return []
    end = text.find("\n## ", start + len(heading))
    return [text[start : end if end >= 0 else len(text)].rstrip("\n") + "\n"]


def write_report(
    results: list[NetResult], end_to_end_rows: list[dict] | None, markdown: Path, environment: str, command: str
) -> list[Path]:
    """Write the Markdown report and its charts beside it from measured results (``end_to_end_rows``:
    :func:`benchmarks.end_to_end.measure`'s; None where they were not saved, and the existing report's section is
    kept); returns the files written. The hand-written section :data:`KEPT_HEADING` of an existing report is
    kept."""
    fps_png = markdown.with_name("benchmarks_fps_vs_parameters.png")
    accuracy_png = markdown.with_name("benchmarks_accuracy_vs_speed.png")
    _fps_chart(results, fps_png)
    written = [fps_png] + ([accuracy_png] if _accuracy_chart(results, accuracy_png) else [])
    sections = [
        "# CPU benchmarks\n",
        f"Generated by `{command}`. {environment}\n",
        "Every net is exported to TorchScript (traced, frozen, `optimize_for_inference` on load), ONNX (opset 21) "
        "and ONNX Runtime int8 (static QDQ, per-channel weights, calibrated on 4 HC18 sample images in 2D, on "
        "noise in 3D), then all four backends are timed in interleaved rounds in the same process, so load from "
        "other processes falls on all of them alike; only ratios within one run are comparable. Latency is for "
        "one call of `Predictor.predict` (sigmoid included) on one batch; fps = 1000 / median ms. Peak RSS: "
        "peak resident set of a fresh process that loads the model and predicts once (see "
        "`lightweight_nets/profile.py`), for each thread count.\n",
        f"![fps vs parameters]({fps_png.name})\n",
        "## Distilled thin separable student vs the Li et al. U-net\n",
        _ratios(results),
        "## Default backend\n",
        "Nets for which each fp32 backend was the fastest, 2D: "
        + "; ".join(
            f"{threads} thread(s): "
            + ", ".join(f"{BACKEND_TITLES[b]} {n}" for b, n in fastest_backends(results, case, threads).most_common())
            for case, threads in _cases(results)
            if case == "2D"
        )
        + ". A bundle serves the backend its `inference.json` names (`BundleSpec.served_backend`; the 3D bundles "
        'TorchScript, measured below); "auto" is the first of `lightweight_nets.inference.predictors.BACKENDS` that '
        "it ships; int8 is never automatic because it changes the outputs (see below).\n",
    ]
    for case, threads in _cases(results):
        sections += [f"## {case}, {threads} thread(s)\n", _summary_table(results, case, threads)]
    sections += [
        "## int8 accuracy\n",
        "Masks at threshold 0.5 on the HC18 samples not used for calibration. Dice (ref.) compares with "
        "the reference masks and means something only for trained weights.\n",
        _accuracy_table(results),
    ]
    if len(written) > 1:
        sections.append(f"![accuracy vs speed]({accuracy_png.name})\n")
    failed = [f"- {r.name} {case}: {error}" for r in results for case, error in r.errors.items()]
    if failed:
        sections += ["## Not measured\n", "\n".join(failed) + "\n"]
    if end_to_end_rows is not None:
        sections += [f"{END_TO_END_HEADING}\n", end_to_end.markdown_section(end_to_end_rows)]
    else:
        sections += _existing_section(markdown, END_TO_END_HEADING) or [
            f"{END_TO_END_HEADING}\n",
            "Not in the saved results: `python -m benchmarks` without `--from-json`.\n",
        ]
    sections += _existing_section(markdown, KEPT_HEADING)
    for case in sorted({t.case for r in results for t in r.timings}):
        sections += [f"## All timings, {case}\n", _detail_table(results, case)]
    with atomic_path(markdown) as tmp:
        tmp.write_text("\n".join(sections))
    return [markdown, *written]
