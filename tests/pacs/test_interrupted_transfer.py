"""A transfer cut by kill -9 (of the sender or of the node) gets one SEG once the sender's retry completes it, not a
SEG of the partial series; a series that grows after its SEG was sent gets a replacing SEG in the same SEG series,
and the job says so."""

import subprocess
import sys
import time

import pydicom
from pacs_support import CT_SERIES, NODE_AET, SENDER_AET, fresh_series, storescu, wait_for, write_config

from lightweight_seg.pacs.jobs import JobStore

# Sends the given files in one association, then kills itself with SIGKILL ("kill") or holds the association open.
SENDER = f"""
import os, signal, sys, time
import pydicom
from pynetdicom import AE
port, mode, *files = sys.argv[1:]
datasets = [pydicom.dcmread(f) for f in files]
ae = AE(ae_title={SENDER_AET!r})
for ds in datasets:
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
assoc = ae.associate("127.0.0.1", int(port), ae_title={NODE_AET!r})
assert assoc.is_established
for ds in datasets:
    assert assoc.send_c_store(ds).Status == 0
print("sent", flush=True)
if mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(600)
"""


def send_and_cut(port: int, mode: str, *paths) -> subprocess.Popen:
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, str(port), mode, *map(str, paths)], stdout=subprocess.PIPE, text=True
    )
    assert sender.stdout.readline() == "sent\n"
    return sender


def job_of(config, series_uid):
    store = JobStore(config.parent / "spool" / "jobs.sqlite")
    try:
        return store.get(series_uid)
    finally:
        store.close()


def test_cut_transfers_get_one_seg_and_a_grown_series_a_replacing_one(orthanc, listener_factory, tmp_path):
    config = write_config(tmp_path / "node.json", orthanc, quiet_seconds=1.0, aborted_quiet_seconds=120)
    listener = listener_factory(config)
    study_uid, cut_uid, cut = fresh_series([*CT_SERIES, "dicomdirtests/77654033/CT2/17196"], tmp_path / "a")
    cut, grown = cut[:3], cut[3:]

    # 1. The sender is killed after one instance: its association ends in an abort; the series waits for a retry.
    send_and_cut(listener.port, "kill", cut[0]).wait(timeout=30)
    wait_for(lambda: job_of(config, cut_uid).incomplete, 10, 0.1, "the series marked possibly incomplete")
    time.sleep(2.5)  # well past the 1 s quiet time
    assert job_of(config, cut_uid).state == "queued" and orthanc.sop_uids(study_uid, "SEG") == []

    # 2. The node is killed while an association delivers a second series; after the restart it waits again.
    _, crash_uid, crash = fresh_series(CT_SERIES, tmp_path / "b", study_uid)
    sender = send_and_cut(listener.port, "hold", crash[0])
    listener.kill()
    sender.kill()
    sender.wait(timeout=30)
    listener = listener_factory(config)
    assert "queued series wait their quiet time again" in listener.log()
    time.sleep(2.5)
    job = job_of(config, crash_uid)
    assert (job.state, job.incomplete) == ("queued", 1) and orthanc.sop_uids(study_uid, "SEG") == []

    # 3. The senders retry the whole series: one SEG each, of every instance.
    assert storescu(cut, listener.port).returncode == 0
    assert storescu(crash, listener.port).returncode == 0
    wait_for(
        lambda: all(job_of(config, uid).state == "done" for uid in (cut_uid, crash_uid)), 120, 0.5, "both series done"
    )
    first = job_of(config, cut_uid)
    segs = {uid: job_of(config, uid).seg_uid for uid in (cut_uid, crash_uid)}
    assert sorted(orthanc.sop_uids(study_uid, "SEG")) == sorted(segs.values())
    seg = pydicom.dcmread(next((tmp_path / "spool" / "out" / cut_uid).rglob("*.seg.dcm")))
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 3 and first.error is None

    # 4. The series grows after its SEG was sent: the new SEG replaces it in the same SEG series, said in the job.
    assert storescu(grown, listener.port).returncode == 0
    wait_for(
        lambda: (job := job_of(config, cut_uid)).state == "done" and job.seg_uid != first.seg_uid,
        60,
        0.5,
        "the replacing SEG",
    )
    job = job_of(config, cut_uid)
    assert f"replaces 1 earlier SEG sent before the series grew ({first.seg_uid})" in job.error
    replacing = pydicom.dcmread(next((tmp_path / "spool" / "out" / cut_uid).rglob("*.seg.dcm")))
    assert (replacing.SeriesInstanceUID, replacing.InstanceNumber) == (seg.SeriesInstanceUID, 2)
    assert sorted(orthanc.sop_uids(study_uid, "SEG")) == sorted([*segs.values(), job.seg_uid])
    assert "Traceback" not in listener.log()
