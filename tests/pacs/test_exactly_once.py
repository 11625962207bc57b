"""Exactly once across the crash window between Orthanc's acknowledgement and the record of the send."""

import sqlite3
from pathlib import Path

import pydicom
from pacs_support import CT_SERIES, fresh_series, write_config

from lightweight_seg.pacs.config import load_config
from lightweight_seg.pacs.node import Node, sr_uid_of

DEMO_US = Path(__file__).resolve().parents[2] / "samples" / "dicom" / "us_hc18_006.dcm"  # a fetal head, calibrated


def _crash_after_acknowledged_before_recorded_and_restart(node: Node) -> None:
    """The state a kill -9 leaves if it strikes after the PACS acknowledged what was sent but before the sends were
    recorded; then the restart's recovery and the job's next run."""
    db = sqlite3.connect(node.spool.root / "jobs.sqlite")
    with db:
        db.execute("DELETE FROM sent")
        db.execute("UPDATE jobs SET state = 'running'")
    db.close()
    node.jobs.recover(max_attempts=3)
    node.run(node.jobs.claim())


def test_resend_after_crash_between_send_and_record_is_idempotent(orthanc, tmp_path):
    node = Node(load_config(write_config(tmp_path / "node.json", orthanc)))
    study_uid, series_uid, paths = fresh_series(CT_SERIES, tmp_path / "src")
    node.add([node.spool.store_dataset(pydicom.dcmread(p)) for p in paths], quiet=0, destination="pacs")
    node.run(node.jobs.claim())
    first = node.jobs.get(series_uid)
    assert first.state == "done", first.error
    assert orthanc.sop_uids(study_uid, "SEG") == [first.seg_uid]

    _crash_after_acknowledged_before_recorded_and_restart(node)
    second = node.jobs.get(series_uid)
    assert second.state == "done" and second.seg_uid == first.seg_uid  # the kept SEG: same SOP Instance UID
    assert orthanc.sop_uids(study_uid, "SEG") == [first.seg_uid]  # so the PACS holds it once
    assert node.jobs.was_sent(first.seg_uid, "pacs")
    node.jobs.close()


def test_the_measurement_sr_goes_with_its_seg_exactly_once(orthanc, tmp_path):
    """An ultrasound with a head measured (the demo HC18 frame, calibrated): its SR follows the SEG to the PACS,
    references the SEG by the UIDs the node derived for it, and is stored once however often the crash window is hit."""
    node = Node(load_config(write_config(tmp_path / "node.json", orthanc)))
    study_uid, series_uid, paths = fresh_series(str(DEMO_US), tmp_path / "src")
    node.add([node.spool.store_dataset(pydicom.dcmread(p)) for p in paths], quiet=0, destination="pacs")
    node.run(node.jobs.claim())
    first = node.jobs.get(series_uid)
    assert first.state == "done", first.error
    sr_uid = sr_uid_of(first.seg_uid)
    assert orthanc.sop_uids(study_uid, "SEG") == [first.seg_uid] and orthanc.sop_uids(study_uid, "SR") == [sr_uid]
    (sr_path,) = (node.spool.root / "out" / series_uid).rglob("*.sr.dcm")
    sr = pydicom.dcmread(sr_path)
    assert sr.SOPInstanceUID == sr_uid and sr.StudyInstanceUID == study_uid
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == {first.seg_uid, pydicom.dcmread(paths[0]).SOPInstanceUID}

    _crash_after_acknowledged_before_recorded_and_restart(node)  # after the SEG and the SR were acknowledged
    assert node.jobs.get(series_uid).seg_uid == first.seg_uid
    assert orthanc.sop_uids(study_uid, "SR") == [sr_uid] and orthanc.sop_uids(study_uid, "SEG") == [first.seg_uid]
    assert node.jobs.was_sent(sr_uid, "pacs") and node.jobs.was_sent(first.seg_uid, "pacs")
    node.jobs.close()
