"""The benchmark harness end to end on a small input: real nets, real exports, every backend, the report."""

import pytest
from PIL import Image

from benchmarks import checkout, end_to_end
from benchmarks.cpu import MEASURED_BACKENDS, Case, benchmark_net
from benchmarks.report import BASELINE, STUDENT, write_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results():
    case = Case("2D", (1, 1, 64, 64), runs=3, warmup=1, threads=(2,), peak_rss=False)  # as --quick
    return [benchmark_net(name, [case], log=lambda line: None) for name in (STUDENT, BASELINE)]


def test_every_backend_is_timed_and_int8_is_checked_on_real_images(results):
    for result in results:
        assert not result.errors
        assert [t.backend for t in result.timings] == list(MEASURED_BACKENDS)
        assert all(len(t.latencies_ms) == 3 and t.median_ms > 0 for t in result.timings)
        assert result.accuracy["images"] > 0
    student, baseline = results
    # the trained student's int8 masks on real images are the fp32 ones but for a few edge pixels
    assert student.accuracy["int8_vs_fp32_dice"] >= 0.95
    assert student.weights.startswith("trained") and student.parameters < baseline.parameters
    assert student.gflops["2D"] < baseline.gflops["2D"]


def test_report_states_each_target_and_links_its_charts(results, tmp_path):
    written = write_report(results, end_to_end.measure(), tmp_path / "bench.md", "test machine", "pytest")
    report = written[0].read_text()
    assert "- 2 thread(s): target >= 150 fps on the best backend" in report
    assert "- Target: US frame DICOM -> SEG, warm, <= 0.3 s:" in report
    assert "- Target: 120-frame US cine >= 60 frames/s end to end:" in report
    assert "failed" not in report
    for chart in written[1:]:
        assert f"]({chart.name})" in report
        with Image.open(chart) as image:
            assert image.format == "PNG"


def test_zoo3d_scores_every_trained_hippocampus_network_on_the_same_volumes(tmp_path):
    from benchmarks.zoo3d import compare, epochs_trained, markdown, trained_networks, validation_log

    networks = trained_networks()
    assert {"served model", "teacher"} <= set(networks)
    rows = compare(limit=2)
    assert [row["name"] for row in rows] == list(networks)
    for row in rows:
        assert set(row["dice"]) == {"anterior hippocampus", "posterior hippocampus"}
        assert 0 <= row["mean_dice"]["mean"] <= 1 and row["seconds_per_volume"]["mean"] > 0
        assert row["parameters"] > 0 and row["gflops"] > 0
    table = markdown(rows).splitlines()
    assert len(table) == 2 + len(rows) and all(f"| {row['name']} |" in line for row, line in zip(rows, table[2:]))
    log = tmp_path / "experiments" / "net.metrics.csv"
    log.parent.mkdir()
    log.write_text("epoch,step,train_loss,val_loss,val_dice\n0,4,0.9,,\n0,4,,0.8,0.5\n1,9,0.7,,\n1,9,,0.6,0.75\n")
    assert epochs_trained(tmp_path / "experiments" / "net.pt") == 2
    assert validation_log(tmp_path / "experiments" / "net.pt") == {0: 0.5, 1: 0.75}
    assert epochs_trained(tmp_path / "experiments" / "other.pt") is None


def test_training_benchmark_times_every_layout_and_precision_through_the_lightning_modules(tmp_path):
    from benchmarks import training

    markdown = tmp_path / "training.md"
    training.main(["--steps", "1", "--size", "64", "--markdown", str(markdown)])
    rows = [line for line in markdown.read_text().splitlines() if line.startswith(f"| {training.STUDENT}")]
    assert len(rows) == 2 * len(training.SETTINGS)  # supervised and distilled, each setting once
    assert all(float(row.split("|")[3]) > 0 for row in rows)
    assert Image.open(markdown.with_suffix(".png")).size[0] > 0


def test_training_benchmark_3d_times_each_zoo_network_once_with_the_hippocampus_recipe():
    import json

    from benchmarks import training
    from lightweight_nets.bundle import BundleSpec

    bundle = checkout("bundle", "hippocampus_mr")
    runs = training.zoo3d_modules(bundle)
    assert {"served model", "teacher", "thin_separable_student", "basic_unet"} <= set(runs)
    assert "thin_unet_distilled" not in runs  # the served network again, distilled: timed once
    recipe = json.loads((bundle / "configs" / "train.json").read_text())
    make_module, shape, labels, batch_size = runs["thin_separable_student"]
    assert shape == tuple(BundleSpec.load(bundle).preprocessing.spatial_size) and labels == 2
    assert batch_size == recipe["datamodule"]["batch_size"] * recipe["datamodule"]["samples_per_volume"]
    module = make_module(True)
    assert module.hparams.channels_last and module.hparams.loss == recipe["module"]["loss"]
    assert sum(p.numel() for p in module.net.parameters()) < sum(
        p.numel() for p in runs["teacher"][0](True).net.parameters()
    )
    assert training.seconds_per_step(*runs["served model"], True, "bf16-mixed", steps=1, warmup=1) > 0


def test_cold_run_reports_its_own_peak_memory_not_its_parents(tmp_path):
    import numpy as np

    parent = np.ones((1536, 1024, 1024), dtype=np.uint8)  # this process now holds 1.5 GiB more than the child needs
    cold = end_to_end._cold_run(checkout("samples", "dicom", "sts_019_ct"), tmp_path, threads=2)
    assert cold["segs"] == 1
    assert cold["peak_rss_mib"] < parent.nbytes / 2**20  # getrusage's ru_maxrss would report the parent's peak
    assert 0 < cold["loaded_rss_mib"] < cold["peak_rss_mib"]  # what the process held before reading, then more
