"""Pull mode against a real Orthanc: fetch by UID or query, segment, send the SEG back into the same study."""

import pydicom
import pytest
from pacs_support import CT_SERIES, cli, free_port, fresh_series, storescu, write_config


@pytest.mark.parametrize("peer", ["pacs", "pacs-web"])
def test_pull_round_trip(orthanc, tmp_path, peer):
    """DIMSE (C-FIND, C-GET, C-STORE) or DICOMweb (QIDO-RS, WADO-RS, STOW-RS): the SEG lands in the study, once."""
    study_uid, series_uid, paths = fresh_series(CT_SERIES, tmp_path / "src")
    assert storescu(paths, orthanc.dicom_port, called=orthanc.aet).returncode == 0
    config = write_config(tmp_path / "node.json", orthanc)
    pulled = cli(config, "pull", "--from", peer, "--study", study_uid)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    uid, state, seg_uid, error = pulled.stdout.rstrip("\n").split("\t")
    assert (uid, state, error) == (series_uid, "done", "")
    assert orthanc.sop_uids(study_uid, "SEG") == [seg_uid]
    again = cli(config, "pull", "--from", peer, "--series", series_uid)  # idempotent: nothing new, nothing re-sent
    assert again.returncode == 0 and again.stdout.split("\t")[1] == "done"
    assert orthanc.sop_uids(study_uid, "SEG") == [seg_uid]


def test_pull_by_query_and_to_another_peer(orthanc, tmp_path):
    """Find by a query (here the Patient ID of a fresh study), fetch by DICOMweb, send by DIMSE."""
    study_uid, _, paths = fresh_series("CT_small.dcm", tmp_path / "src")
    ds = pydicom.dcmread(paths[0])
    ds.PatientID = "LWSEG-QUERY-TEST-" + study_uid[-8:]
    ds.save_as(paths[0])
    assert storescu(paths, orthanc.dicom_port, called=orthanc.aet).returncode == 0
    config = write_config(tmp_path / "node.json", orthanc)
    pulled = cli(config, "pull", "--from", "pacs-web", "--to", "pacs", "--query", f"PatientID={ds.PatientID}")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert len(orthanc.sop_uids(study_uid, "SEG")) == 1


def test_pull_nothing_found(orthanc, tmp_path):
    config = write_config(tmp_path / "node.json", orthanc)
    pulled = cli(config, "pull", "--from", "pacs", "--study", "1.2.3.4.5.6.7.8.9")
    assert pulled.returncode == 1 and "no matching series" in pulled.stderr


def test_pull_to_a_destination_that_is_down_gives_up_with_the_reason(orthanc, tmp_path):
    """A listener re-sends a written SEG until the destination takes it; a pull stops after max_attempts sends."""
    study_uid, series_uid, paths = fresh_series("CT_small.dcm", tmp_path / "src")
    assert storescu(paths, orthanc.dicom_port, called=orthanc.aet).returncode == 0
    peers = {**orthanc.peers(), "down": {"ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()}}
    config = write_config(tmp_path / "node.json", orthanc, peers=peers)
    pulled = cli(config, "pull", "--from", "pacs", "--to", "down", "--series", series_uid, timeout=120)
    assert pulled.returncode == 1
    uid, state, _, error = pulled.stdout.rstrip("\n").split("\t")
    assert (uid, state, error) == (
        series_uid,
        "failed",
        "send failed 2 times: association with down (NOBODY) failed or was rejected",
    )
    assert orthanc.sop_uids(study_uid, "SEG") == []
