"""The listener as a real process: access control, a received series segmented and sent once, bad peers and
bad objects recorded in the status without stopping the node."""

import json

import pydicom
from pacs_support import CT_SERIES, SENDER_AET, cli, echo, fresh_series, storescu, wait_for, write_config
from pynetdicom import AE
from test_app_support import SHARED_DATA, write_ultrasound

from lightweight_seg.pacs import dimse_status


def status(config) -> dict:
    answer = cli(config, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    return {job["series_uid"]: job for job in json.loads(answer.stdout)}


def test_echo_and_unknown_calling_ae_rejected(orthanc, listener_factory, tmp_path):
    config = write_config(tmp_path / "node.json", orthanc)
    listener = listener_factory(config)
    assert echo(listener.port)
    assert not echo(listener.port, aet="INTRUDER")
    _, series_uid, paths = fresh_series("CT_small.dcm", tmp_path / "src")
    refused = storescu(paths, listener.port, aet="INTRUDER")
    assert refused.returncode != 0 and "Rejected" in refused.stderr + refused.stdout
    assert not (tmp_path / "spool" / "series" / series_uid).exists()
    assert status(config) == {}
    busy = cli(config, "pull", "--from", "pacs", "--series", series_uid)  # the spool belongs to the listener
    assert busy.returncode == 2 and "in use by another listen or pull" in busy.stderr


def test_received_series_segmented_and_sent_once(orthanc, listener_factory, tmp_path):
    config = write_config(tmp_path / "node.json", orthanc)
    listener = listener_factory(config)
    study_uid, series_uid, paths = fresh_series(CT_SERIES, tmp_path / "src")
    assert storescu(paths, listener.port).returncode == 0
    segs = wait_for(lambda: orthanc.sop_uids(study_uid, "SEG"), 120, 0.5, "the SEG in Orthanc")
    job = wait_for(lambda: status(config)[series_uid]["state"] == "done" and status(config)[series_uid], 30)
    assert segs == [job["seg_uid"]]
    latency = job["updated"] - job["last_received"]
    print(f"\nidle node, quiet time 1 s: last instance received -> SEG stored in {latency:.1f} s")
    seg = pydicom.dcmread(next((tmp_path / "spool" / "out" / series_uid).rglob("*.seg.dcm")))
    assert seg.StudyInstanceUID == study_uid and seg.SOPInstanceUID == job["seg_uid"]
    assert storescu(paths[:1], listener.port).returncode == 0  # a re-sent copy does not re-open the series
    wait_for(lambda: status(config)[series_uid]["state"] == "done", 10)
    assert orthanc.sop_uids(study_uid, "SEG") == segs
    log = listener.log()
    for secret in (seg.PatientName, seg.PatientID, series_uid, study_uid, job["seg_uid"], *(p.stem for p in paths)):
        assert str(secret) not in log


def test_every_shipped_model_served_warm_each_series_to_its_own(orthanc, listener_factory, tmp_path):
    """The node with the default bundles and no forced model: an obstetric US and a breast US of one study each
    get the SEG of their own model; a chest CT of the same study (no model is for it) is done without a SEG, the
    reason in the status."""
    config = write_config(tmp_path / "node.json", orthanc, model=None)
    listener = listener_factory(config)
    assert (
        "model ready: breast_lesion_us (onnx), fetal_head_us (onnx), hippocampus_mr (torchscript), "
        "sarcoma_ct (torchscript)" in listener.log()
    )
    breast = write_ultrasound(tmp_path / "breast.dcm", SHARED_DATA / "busi" / "images" / "benign_3.png", "BREAST")
    uncompressed = pydicom.dcmread(breast)  # storescu proposes uncompressed transfer syntaxes only
    uncompressed.decompress()
    uncompressed.SeriesNumber = 2  # the obstetric series is number 1 in this study
    uncompressed.save_as(breast, enforce_file_format=True)
    study_uid, ob_uid, ob_paths = fresh_series("OBXXXX1A.dcm", tmp_path / "ob")
    _, breast_uid, breast_paths = fresh_series(str(breast), tmp_path / "breast", study_uid)
    _, ct_uid, ct_paths = fresh_series(CT_SERIES, tmp_path / "ct", study_uid)
    for path in ct_paths:
        chest = pydicom.dcmread(path)
        chest.BodyPartExamined = "CHEST"
        chest.save_as(path, enforce_file_format=True)
    assert storescu(ob_paths + breast_paths + ct_paths, listener.port).returncode == 0
    jobs = wait_for(
        lambda: (
            (jobs := status(config))
            and len(jobs) == 3
            and all(job["state"] == "done" for job in jobs.values())
            and jobs
        ),
        180,
        0.5,
        "three done jobs",
    )
    assert jobs[ct_uid]["seg_uid"] == "" and "no model for CT/CHEST" in jobs[ct_uid]["error"]
    segs = {
        uid: pydicom.dcmread(next((tmp_path / "spool" / "out" / uid).rglob("*.seg.dcm")))
        for uid in (ob_uid, breast_uid)
    }
    assert segs[ob_uid].SegmentSequence[0].SegmentLabel == "fetal head"
    assert segs[breast_uid].SegmentSequence[0].SegmentLabel == "breast lesion"
    assert sorted(orthanc.sop_uids(study_uid, "SEG")) == sorted(jobs[uid]["seg_uid"] for uid in (ob_uid, breast_uid))
    assert segs[ob_uid].SeriesNumber != segs[breast_uid].SeriesNumber


def send_dataset(port: int, ds) -> int:
    ae = AE(ae_title=SENDER_AET)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="LWSEG")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    return status.Status


def test_bad_objects_get_clear_errors_and_node_keeps_working(orthanc, listener_factory, tmp_path):
    config = write_config(tmp_path / "node.json", orthanc)
    listener = listener_factory(config)
    # 1. no Series Instance UID: refused to the sender, kept under rejected/, parked in the status with the reason.
    no_series = pydicom.dcmread(fresh_series("CT_small.dcm", tmp_path / "a")[2][0])
    del no_series.SeriesInstanceUID
    assert send_dataset(listener.port, no_series) == dimse_status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    # 2. truncated pixel data: stored, then the pipeline fails on it; retried, then parked with the reason.
    _, broken_uid, broken = fresh_series("CT_small.dcm", tmp_path / "b")
    ds = pydicom.dcmread(broken[0])
    ds.PixelData = ds.PixelData[:1000]
    assert send_dataset(listener.port, ds) == dimse_status.SUCCESS
    # 3. an object the app does not segment (a structured report).
    _, sr_uid, sr = fresh_series("test-SR.dcm", tmp_path / "c")
    assert storescu(sr, listener.port).returncode == 0
    # 4. the node still does its job.
    study_uid, good_uid, good = fresh_series("CT_small.dcm", tmp_path / "d")
    assert storescu(good, listener.port).returncode == 0
    assert echo(listener.port)

    def settled():
        jobs = status(config)
        return len(jobs) == 4 and all(j["state"] in ("done", "parked") for j in jobs.values()) and jobs

    jobs = wait_for(settled, 120, 0.5, "all four jobs to settle")
    assert jobs[good_uid]["state"] == "done" and orthanc.sop_uids(study_uid, "SEG") == [jobs[good_uid]["seg_uid"]]
    for uid in (broken_uid, sr_uid):
        assert jobs[uid]["state"] == "parked" and jobs[uid]["attempts"] == 2 and jobs[uid]["error"], jobs[uid]
    (rejected,) = [job for key, job in jobs.items() if key.startswith("rejected/")]
    assert rejected["state"] == "parked" and "no valid Series/SOP Instance UID" in rejected["error"]
    assert (tmp_path / "spool" / "rejected" / rejected["series_uid"].split("/")[1]).exists()
    text = cli(config, "status").stdout
    assert text.startswith("queued 0  running 0  done 1  failed 0  parked 3") and jobs[sr_uid]["error"] in text
    assert listener.process.poll() is None
    assert cli(config, "retry", sr_uid).returncode == 0  # an operator gives it another round: parked again
    wait_for(lambda: status(config)[sr_uid]["state"] == "parked" and status(config)[sr_uid]["attempts"] == 2, 60)
    assert cli(config, "retry", good_uid).returncode == 1  # only parked or failed jobs
    assert "Traceback" not in listener.log()
