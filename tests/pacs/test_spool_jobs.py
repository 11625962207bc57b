"""Spool and job store on their own: atomic filing, rejected objects, retries, parking, crash recovery."""

import time

import pydicom
import pytest
from pacs_support import fresh_series
from pydicom.dataset import Dataset

from lightweight_nets.io.files import TEMPORARY_GLOB
from lightweight_seg.pacs.jobs import JobStore
from lightweight_seg.pacs.spool import RejectedObject, Spool


def test_spool_files_by_series_and_sop_uid(tmp_path):
    study_uid, series_uid, paths = fresh_series(["CT_small.dcm", "CT_small.dcm"], tmp_path / "src")
    spool = Spool(tmp_path / "spool")
    results = [spool.store_dataset(pydicom.dcmread(p)) for p in paths]
    assert results == [(series_uid, study_uid, True)] * 2
    assert [p.name for p in spool.instances(series_uid)] == sorted(p.name for p in paths)
    assert spool.store_dataset(pydicom.dcmread(paths[0])) == (series_uid, study_uid, False)  # a re-sent copy
    assert pydicom.dcmread(spool.instances(series_uid)[0]).SeriesInstanceUID == series_uid
    assert not list(spool.root.rglob(TEMPORARY_GLOB))


def test_spool_keeps_objects_it_cannot_file(tmp_path):
    spool = Spool(tmp_path / "spool")
    ds = pydicom.dcmread(fresh_series("CT_small.dcm", tmp_path / "src")[2][0])
    with pytest.warns(UserWarning, match="Invalid value for VR UI"), pytest.raises(RejectedObject) as caught:
        ds.SeriesInstanceUID = "../../etc"  # a hostile "UID" must not become a path
        spool.store_dataset(ds)
    assert "no valid Series" in str(caught.value)
    assert caught.value.path.parent == spool.root / "rejected" and caught.value.path.exists()
    with pytest.raises(RejectedObject, match="cannot decode"):
        spool.store_raw(ds.file_meta, b"\x08\x00garbage", lambda: Dataset()[0xFFFF0000])
    assert spool.series_uids() == []


def test_job_waits_for_quiet_time_then_retries_then_parks(tmp_path):
    jobs = JobStore(tmp_path / "jobs.sqlite")
    jobs.received("1.2.3", "1.2", True, quiet=0.3, destination="pacs")
    assert jobs.claim() is None  # still inside the quiet time
    time.sleep(0.35)
    job = jobs.claim()
    assert (job.state, job.attempts) == ("running", 1)
    assert jobs.fail(job, "bad pixels", max_attempts=2, retry_seconds=0) == "failed"
    job = jobs.claim()
    assert job.attempts == 2
    assert jobs.fail(job, "bad pixels", max_attempts=2, retry_seconds=0) == "parked"
    assert jobs.claim() is None
    assert (jobs.get("1.2.3").state, jobs.get("1.2.3").error) == ("parked", "bad pixels")
    assert jobs.retry("1.2.3") and jobs.claim().attempts == 1


def test_new_instance_while_running_requeues(tmp_path):
    jobs = JobStore(tmp_path / "jobs.sqlite")
    jobs.received("1.2.3", "1.2", True, quiet=0, destination="pacs")
    job = jobs.claim()
    jobs.received("1.2.3", "1.2", True, quiet=0, destination="pacs")
    jobs.finish(job, "9.9")
    assert jobs.get("1.2.3").state == "queued"
    jobs.finish(jobs.claim(), "9.9")
    jobs.received("1.2.3", "1.2", False, quiet=0, destination="pacs")  # a duplicate does not re-open it
    assert jobs.get("1.2.3").state == "done"


def test_recover_after_crash(tmp_path):
    jobs = JobStore(tmp_path / "jobs.sqlite")
    for uid in ("1.1", "1.2"):
        jobs.received(uid, "", True, quiet=0, destination="pacs")
    first, second = jobs.claim(), jobs.claim()
    jobs.fail(second, "x", max_attempts=1, retry_seconds=0)
    jobs.close()
    jobs = JobStore(tmp_path / "jobs.sqlite")  # as after kill -9: "1.1" was left running
    assert jobs.recover(max_attempts=2) == 1
    assert jobs.get(first.series_uid).state == "queued"
    assert jobs.reconcile("1.3", on_disk=2, quiet=0, destination="pacs")  # spooled, but never registered
    assert jobs.get("1.3").instances == 2 and not jobs.reconcile("1.3", on_disk=2, quiet=0, destination="pacs")
    jobs.record_sent("9.1", "pacs", "1.1")
    assert jobs.was_sent("9.1", "pacs") and not jobs.was_sent("9.1", "other")


def test_aborted_delivery_waits_longer_and_a_restart_restarts_the_quiet_time(tmp_path):
    jobs = JobStore(tmp_path / "jobs.sqlite")
    jobs.received("1.1", "", True, quiet=0, destination="pacs", opened=True)
    jobs.association_ended({"1.1"}, aborted=True, quiet=0, aborted_quiet=60)
    assert jobs.get("1.1").incomplete and jobs.claim() is None  # waits for the sender's retry
    jobs.received("1.1", "", False, quiet=0, destination="pacs", opened=True)  # the retry re-sends it all
    jobs.association_ended({"1.1"}, aborted=False, quiet=0, aborted_quiet=60)
    assert not jobs.get("1.1").incomplete and jobs.claim().series_uid == "1.1"
    jobs.received("1.2", "", True, quiet=0, destination="pacs", opened=True)  # the node dies mid-transfer
    jobs.received("1.3", "", True, quiet=0, destination="pacs")  # complete, its quiet time long over
    jobs.close()
    jobs = JobStore(tmp_path / "jobs.sqlite")
    jobs.recover(max_attempts=3)
    assert jobs.restart_quiet(quiet=0.3, aborted_quiet=60) == 3
    assert [jobs.get(uid).incomplete for uid in ("1.1", "1.2", "1.3")] == [0, 1, 0]
    assert jobs.claim() is None  # nothing at once after a restart
    time.sleep(0.35)
    assert {jobs.claim().series_uid, jobs.claim().series_uid} == {"1.1", "1.3"} and jobs.claim() is None
