"""lightweight-seg-train-all on the CPU at tiny size: the device data module's augmentation, the job plan from the
bundles' train_jobs.json, and a real run of two bundles that installs, then resumes."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightweight_nets import create_net
from lightweight_nets.bundle import BundleSpec
from lightweight_nets.inference.predictors import load_weights
from lightweight_nets.training.device_data import DeviceSegmentationDataModule, augment_batch
from lightweight_nets.training.device_pack import split_into_parts, write_training_grid_copy
from lightweight_nets.training.train_all import chain_depth, is_finished, main, plan
from lightweight_nets.training.train_job import EARLIER_LOG, _keep_earlier_rows
from lightweight_nets.transforms import Preprocessing

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY = ["--limit", "3", "--num-workers", "0", "--jobs", "2", "--set", "preprocessing#spatial_size", "[64, 64]"]


def test_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    mask = torch.zeros(400, 1, 64, 96)
    mask[:, :, 20:44, 30:70] = 1
    out = augment_batch({"image": mask.clone(), "label": mask.clone()})
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}
    changed = (out["label"] != mask).flatten(1).any(1)
    assert 0.65 < changed.float().mean() < 0.85  # flip and affine each with probability 0.5: 3 in 4 change
    agreement = ((out["image"] > 0.5) == (out["label"] > 0.5)).float().mean()
    assert agreement > 0.98  # bilinear image and nearest mask differ at the edges only


def test_plan_orders_teachers_first_and_splits_the_budget_along_the_chain():
    jobs = plan([REPO / "bundle" / "fetal_head_us", REPO / "bundle" / "sarcoma_ct"], seeds=[0, 1])
    keys = [job.key for job in jobs]
    assert (
        keys.index("fetal_head_us/teacher/seed1")
        < keys.index("fetal_head_us/distilled/seed1")
        < keys.index("fetal_head_us/student16_128/seed1")
    )
    assert chain_depth(jobs) == 3 and len(jobs) == 10
    fetal = REPO / "bundle" / "fetal_head_us"
    assert [job.name for job in plan([fetal], seeds=[0], only=["model"])] == ["model"]  # the served one needs none
    only = plan([fetal], seeds=[0], only=["student16_128"])
    assert [job.name for job in only] == ["teacher", "distilled", "student16_128"]
    assert is_finished({"stopped": "early_stopping", "epochs": 3}, 200)
    assert not is_finished({"stopped": "max_time", "epochs": 3}, 200)
    assert not is_finished({"stopped": "max_epochs", "epochs": 1}, 2)


@pytest.mark.skipif(not (SHARED_DATA / "hc18").is_dir(), reason="needs ../shared/data")
def test_training_grid_copy_reads_back_as_the_decoded_data(tmp_path):
    names = ["000_HC.png", "001_HC.png", "003_HC.png"]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:2], "validation": names[2:]}))
    preprocessing = Preprocessing([64, 96])
    write_training_grid_copy(SHARED_DATA / "hc18", names, preprocessing, tmp_path / "copy" / "hc18")
    tensors = {}
    for source in (SHARED_DATA / "hc18", tmp_path / "copy" / "hc18"):
        data = DeviceSegmentationDataModule(str(source), str(split), preprocessing, num_workers=0)
        data.setup()
        tensors[source] = (data.train_set.images, data.train_set.labels, len(data.val_set))
    (original, original_masks, n_val), (copy, copy_masks, n_val_copy) = tensors.values()
    assert copy.shape == original.shape == (2, 1, 64, 96) and n_val == n_val_copy == 1
    assert (copy - original).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(copy_masks, original_masks)
    with pytest.raises(ValueError, match="a copy made by"):
        DeviceSegmentationDataModule(str(tmp_path / "copy" / "hc18"), str(split), Preprocessing([64, 64])).setup()
    assert split_into_parts(tmp_path / "copy", tmp_path / "parts", part_bytes=12_000) >= 2
    assert sorted(p.name for p in (tmp_path / "parts").rglob("*.png")) == sorted(names * 2)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "hc18").is_dir(), reason="needs ../shared/data")
def test_two_bundles_train_install_and_resume(tmp_path, capfd):
    bundles = tmp_path / "bundles"
    for name in ("fetal_head_us", "breast_lesion_us"):
        shutil.copytree(
            REPO / "bundle" / name,
            bundles / name,
            ignore=shutil.ignore_patterns("models", "experiments", "logs", "runs"),
        )
    out = tmp_path / "runs"
    # the served models, and the fetal-head distillation comparison's undistilled twin (teacher -> distilled -> it)
    only = ["--only", "model", "student16_128"]
    common = [str(bundles), "-o", str(out), *only, "--data-root", str(SHARED_DATA), *TINY]
    assert main([*common, "--max-epochs", "1", "--install"]) == 0
    first = capfd.readouterr().out
    assert first.index("[fetal_head_us/teacher/seed0] done") < first.index("[fetal_head_us/distilled/seed0] starts")
    assert first.index("[breast_lesion_us/teacher/seed0] done") < first.index("[breast_lesion_us/model/seed0] starts")
    assert "[fetal_head_us/model/seed0] epoch 1 " in first

    for name in ("fetal_head_us", "breast_lesion_us"):
        root = bundles / name
        load_weights(BundleSpec.load(root).network(), root / "models" / "model.pt")
        teacher_def = {
            k: v
            for k, v in json.loads((root / "configs" / "distill.json").read_text())["teacher_def"].items()
            if k != "_target_"
        }
        load_weights(create_net(**teacher_def), root / "models" / "teacher.pt")
        assert (root / "logs" / "model.metrics.csv").is_file() and (root / "docs" / "training_record.md").is_file()
    twin = json.loads((out / "fetal_head_us" / "student16_128" / "seed0" / "summary.json").read_text())
    distilled = json.loads((out / "fetal_head_us" / "distilled" / "seed0" / "summary.json").read_text())
    teacher = json.loads((out / "fetal_head_us" / "teacher" / "seed0" / "summary.json").read_text())
    assert distilled["overrides"]["teacher_file"] == teacher["weights"]  # the twin: as many epochs, no teacher
    assert "teacher_file" not in twin["overrides"] and twin["early_stopping"] is False
    assert twin["epochs"] == 1 and twin["stopped"] == "max_epochs" and "val_dice" in twin
    assert {(s["bundle"], s["job"]) for s in json.loads((out / "summary.json").read_text())} == {
        ("fetal_head_us", "distilled"),
        ("fetal_head_us", "student16_128"),
        *((b, j) for b in ("fetal_head_us", "breast_lesion_us") for j in ("teacher", "model")),
    }

    assert main([*common, "--max-epochs", "2"]) == 0  # asked for more epochs: every run resumes
    second = capfd.readouterr().out
    assert second.count("resumes from last.ckpt") == 6 and "epoch 1 " not in second
    model = json.loads((out / "fetal_head_us" / "model" / "seed0" / "summary.json").read_text())
    assert model["epochs"] == 2 and model["resumed_from"].endswith("last.ckpt")
    rows = (out / "fetal_head_us" / "model" / "seed0" / "metrics.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in rows[1:]} >= {"0", "1"}  # both epochs in the one log

    assert main([*common, "--max-epochs", "2"]) == 0
    assert capfd.readouterr().out.count("already finished") == 6


def test_stopping_the_runner_ends_the_jobs_it_started(tmp_path):
    """SIGTERM (or Ctrl-C) to lightweight-seg-train-all ends its training processes too: none goes on writing into
    its run folder unwatched."""
    bundle = tmp_path / "fetal_head_us"
    shutil.copytree(REPO / "bundle" / bundle.name, bundle, ignore=shutil.ignore_patterns("models", "experiments"))
    command = [sys.executable, "-m", "lightweight_nets.training.train_all", str(bundle), "-o", str(tmp_path / "runs")]
    command += ["--only", "model", "--data-root", str(SHARED_DATA), *TINY, "--max-epochs", "100"]
    runner = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in runner.stdout:
        lines.append(line)
        if started := re.search(r"\] starts \(process (\d+)\)", line):
            break
    assert started, "".join(lines)
    runner.send_signal(signal.SIGTERM)
    rest = runner.communicate(timeout=120)[0]
    assert runner.returncode == 128 + signal.SIGTERM and "stopped with the runner" in rest
    with pytest.raises(ProcessLookupError):
        os.kill(int(started.group(1)), 0)


def test_a_resumed_part_stopped_before_its_end_loses_no_earlier_log_row(tmp_path):
    """Lightning's CSV logger starts metrics.csv afresh when a run resumes: the earlier parts' rows wait in
    metrics.earlier.csv, so a part that is itself stopped (the session ends) before it puts them back loses none, and
    rows of an epoch past the checkpoint are not kept twice."""

    def log(path, steps):
        path.write_text("epoch,step,val_dice\n" + "".join(f"{s // 10},{s},0.{s:02d}\n" for s in steps))

    def checkpoint(step):
        torch.save({"global_step": step}, tmp_path / "last.ckpt")
        return tmp_path / "last.ckpt"

    log(tmp_path / "metrics.csv", range(1, 21))  # part 1 ended at step 20
    assert [r["step"] for r in _keep_earlier_rows(tmp_path, checkpoint(20))] == [str(s) for s in range(1, 21)]
    log(tmp_path / "metrics.csv", range(21, 36))  # part 2 logged to step 35, its last checkpoint at 30, then stopped
    rows = _keep_earlier_rows(tmp_path, checkpoint(30))  # part 3 resumes
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 31)]
    assert _keep_earlier_rows(tmp_path, checkpoint(30)) == rows  # part 3 stopped before its logger started
    assert (tmp_path / EARLIER_LOG).read_text().splitlines()[0] == "epoch,step,val_dice"


def test_experiments_are_planned_only_when_asked_and_after_what_sets_their_epochs():
    bundles = [REPO / "bundle" / "sarcoma_ct", REPO / "bundle" / "hippocampus_mr"]
    shipped = plan(bundles, seeds=[0])
    assert not any(job.spec.get("experiment") for job in shipped)
    assert [job.key for job in shipped if job.bundle.name == "sarcoma_ct"] == ["sarcoma_ct/model/seed0"]
    every = plan(bundles, seeds=[0], experiments=True)
    keys = [job.key for job in every]
    sarcoma = ["pool_all_axes", "pool_in_plane_first", "native_pool_in_plane_first", "native_slices_2d"]
    zoo = [f"zoo_{n}" for n in ("thin_separable_student", "flat_unet", "ulite", "sd_unet", "basic_unet")]
    for bundle, names in (("sarcoma_ct", sarcoma), ("hippocampus_mr", zoo)):
        for name in names:
            job = every[keys.index(f"{bundle}/{name}/seed0")]
            assert job.needs == [f"{bundle}/model/seed0"] and keys.index(job.needs[0]) < keys.index(job.key)
            assert job.spec["weights"] == f"experiments/{name.removeprefix('zoo_')}.pt" and job.spec["evaluate"]
    distilled = {
        f"hippocampus_mr/{n}/seed0"
        for n in ("zoo_thin_separable_student_distilled", "thin_unet_distilled_feature_weight_1")
    }
    for key in distilled:
        assert every[keys.index(key)].needs == ["hippocampus_mr/teacher/seed0", "hippocampus_mr/model/seed0"]
    assert set(keys) - {job.key for job in shipped} == distilled | {
        f"{b}/{n}/seed0" for b, names in (("sarcoma_ct", sarcoma), ("hippocampus_mr", zoo)) for n in names
    }
    only = plan(bundles[:1], seeds=[0], only=["native_slices_2d"], experiments=True)
    assert [job.name for job in only] == ["model", "native_slices_2d"]


@pytest.mark.parametrize(
    "jobs, problem",
    [
        ({"x": {"configs": [], "weights": "models/x.pt", "experiment": True}}, "must write under experiments/"),
        (
            {
                "x": {"configs": [], "weights": "experiments/x.pt", "experiment": True},
                "y": {"configs": [], "weights": "models/y.pt", "epochs_of": "x"},
            },
            "job 'y' needs an experiment",
        ),
    ],
)
def test_experiment_jobs_are_checked(tmp_path, jobs, problem):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train_jobs.json").write_text(json.dumps({"jobs": jobs}))
    with pytest.raises(ValueError, match=problem):
        plan([tmp_path], seeds=[0], experiments=True)


def test_the_sarcoma_net_at_the_native_grid_keeps_the_slice_axis_until_the_voxels_are_about_cubic():
    """The experiments' overrides give nets whose size rule fits their patches, and the in-plane-first levels end
    with voxels within a factor 1.25 of cubic."""
    jobs = {job.name: job for job in plan([REPO / "bundle" / "sarcoma_ct"], seeds=[0], experiments=True)}
    network_def = json.loads((REPO / "bundle" / "sarcoma_ct" / "configs" / "inference.json").read_text())
    network_def = {k: v for k, v in network_def["network_def"].items() if k != "_target_"}
    for name in ("pool_in_plane_first", "native_pool_in_plane_first", "native_slices_2d"):
        overrides = jobs[name].spec["overrides"]
        net = create_net(**network_def, pool_factors=overrides["network_def#pool_factors"])
        patch = overrides.get("preprocessing#patch_size", [64, 64, 32])
        assert all(size % multiple == 0 for size, multiple in zip(patch, net.size_multiple))
        if name != "native_slices_2d":
            spacing = overrides.get("preprocessing#spacing_mm", [1.953125, 1.953125, 3.27])
            in_plane_only = [f for f in net.pool_factors if f[2] == 1]
            in_plane_mm = spacing[0] * 2 ** len(in_plane_only)
            assert 0.8 < in_plane_mm / spacing[2] < 1.25


@pytest.mark.skipif(not (SHARED_DATA / "sts_ct").is_dir(), reason="needs ../shared/data")
def test_a_sarcoma_experiment_trains_evaluates_and_installs_under_experiments(tmp_path, capfd):
    """One tiny run of the in-plane-first experiment (and the served model that sets its epochs): the job's pooling
    reaches the net, evaluate.json's Dice and HD95 (mm) land in the summary, --install writes experiments/, and
    installing the served model again keeps the experiment's row in the bundle's training record."""
    root = tmp_path / "sarcoma_ct"
    shutil.copytree(REPO / "bundle" / "sarcoma_ct", root, ignore=shutil.ignore_patterns("models", "logs", "runs"))
    out = tmp_path / "runs"
    args = [
        str(root),
        "-o",
        str(out),
        "--experiments",
        "--only",
        "pool_in_plane_first",
        "--data-root",
        str(SHARED_DATA),
    ]
    assert main([*args, "--limit", "1", "--max-epochs", "1", "--num-workers", "0", "--jobs", "1", "--install"]) == 0
    summary = json.loads((out / "sarcoma_ct" / "pool_in_plane_first" / "seed0" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["overrides"]["network_def#pool_factors"][0] == [2, 2, 1]
    dice = summary["evaluation"]["dice"]["soft-tissue sarcoma"]
    assert dice["n"] == 1 and 0 <= dice["mean"] <= 1 and "soft-tissue sarcoma" in summary["evaluation"]["hd95_mm"]
    assert "| sarcoma_ct | pool_in_plane_first | 0 | soft-tissue sarcoma |" in (out / "summary.md").read_text()
    network_def = {k: v for k, v in BundleSpec.load(root).network_config.items() if k != "_target_"}
    net = create_net(**network_def, pool_factors=[[2, 2, 1]] + [[2, 2, 2]] * 3)
    load_weights(net, root / "experiments" / "pool_in_plane_first.pt")
    assert (root / "models" / "model.pt").is_file() and not (root / "models" / "pool_in_plane_first.pt").exists()

    record = root / "docs" / "training_record.json"
    assert [r["job"] for r in json.loads(record.read_text())] == ["model", "pool_in_plane_first"]
    assert main([str(root), "-o", str(out), "--only", "model", "--install-only"]) == 0  # the served model again
    assert [r["job"] for r in json.loads(record.read_text())] == ["model", "pool_in_plane_first"]  # one row a job
    assert "| sarcoma_ct | pool_in_plane_first | 0 |" in (root / "docs" / "training_record.md").read_text()


def _worsening_module():
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", float(self.current_epoch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.ones(4, 2), batch_size=2)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(torch.ones(2, 2), batch_size=2)

    return Module()


def test_a_diverged_run_stops_at_its_first_non_finite_loss_and_is_not_resumed(tmp_path):
    import lightning.pytorch as pl

    from lightweight_nets.training.train_job import StopWhenLossDiverges, how_it_stopped

    class Diverging(type(_worsening_module())):
        def training_step(self, batch, batch_idx):  # finite for three steps, then NaN, as a bf16 run that blew up
            loss = super().training_step(batch, batch_idx) * (float("nan") if self.global_step >= 3 else 1.0)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.ones(16, 2), batch_size=2)  # 8 steps an epoch

    def fit(module) -> pl.Trainer:
        guard = StopWhenLossDiverges("test")
        trainer = pl.Trainer(max_epochs=3, callbacks=[guard], logger=False, default_root_dir=tmp_path)
        trainer.fit(module)
        return trainer

    diverged = fit(Diverging())
    assert diverged.global_step == 8 and how_it_stopped(diverged) == "non_finite_loss"  # one epoch, not three
    assert is_finished({"stopped": "non_finite_loss", "epochs": 1}, 200)
    assert how_it_stopped(fit(_worsening_module())) == "max_epochs"  # finite losses: the guard stays out of it


@pytest.mark.parametrize("bundle", ["fetal_head_us", "hippocampus_mr"])
def test_a_run_resumes_from_its_latest_epoch_with_this_invocations_time_budget(bundle, tmp_path):
    import lightning.pytorch as pl
    from monai.bundle import ConfigParser

    from lightweight_nets.training.train_job import SessionTimer

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / bundle / "configs" / "train.json"))
    callbacks = parser.get("trainer#callbacks")  # the bundle's own: early stopping, best and last checkpoints

    def trainer(max_epochs: int) -> pl.Trainer:
        timer = {"_target_": "lightweight_nets.training.train_job.SessionTimer", "duration": {"seconds": 3600}}
        built = ConfigParser({"callbacks": [*callbacks, timer]}).get_parsed_content("callbacks")
        logger = pl.loggers.CSVLogger(tmp_path, name="", version="")  # checkpoints in tmp_path/checkpoints
        return pl.Trainer(max_epochs=max_epochs, callbacks=built, logger=logger, enable_progress_bar=False)

    first = trainer(3)
    first.fit(_worsening_module())
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["epoch"] == 2  # the latest epoch, not the best one (the first)
    assert "epoch=0" in next(c.best_model_path for c in first.checkpoint_callbacks if c.monitor)
    (state,) = (v for k, v in checkpoint["callbacks"].items() if k == SessionTimer.__qualname__)
    state["time_elapsed"]["train"] = 10 * 3600.0  # as if the guard had cut it: its hour long spent
    torch.save(checkpoint, last)

    resumed = trainer(4)
    resumed.fit(_worsening_module(), ckpt_path=str(last))
    assert resumed.current_epoch == 4  # trained its fourth epoch: the budget counts this process's time only
