"""Find, fetch and send against a real Orthanc, by DIMSE (C-FIND, C-GET, C-STORE) and DICOMweb (QIDO/WADO/STOW)."""

import json

import pydicom
import pytest
from pacs_support import CT_SERIES, PASSWORD, USER, fresh_series, storescu

from lightweight_seg.pacs.config import Peer, load_config
from lightweight_seg.pacs.spool import Spool
from lightweight_seg.pacs.transport import DimseClient, TransportError, WebClient


@pytest.fixture
def in_pacs(orthanc, tmp_path):
    """A fresh three-instance CT series stored in Orthanc."""
    study_uid, series_uid, paths = fresh_series(CT_SERIES, tmp_path / "src")
    sent = storescu(paths, orthanc.dicom_port, called=orthanc.aet)
    assert sent.returncode == 0, sent.stderr
    return study_uid, series_uid, paths


@pytest.fixture
def web_env(monkeypatch):
    monkeypatch.setenv("LWSEG_DICOMWEB_USERNAME", USER)
    monkeypatch.setenv("LWSEG_DICOMWEB_PASSWORD", PASSWORD)


def clients(orthanc):
    peers = orthanc.peers()
    return [
        DimseClient(Peer(name="pacs", **peers["pacs"]), "LWSEG"),
        WebClient(Peer(name="pacs-web", **peers["pacs-web"])),
    ]


def test_find_and_fetch_both_protocols(orthanc, in_pacs, tmp_path, web_env):
    study_uid, series_uid, paths = in_pacs
    for client in clients(orthanc):
        assert client.find_series(study_uid) == [(study_uid, series_uid)]
        assert client.find_series(series_uid=series_uid) == [(study_uid, series_uid)]
        spool = Spool(tmp_path / type(client).__name__)
        stored = client.fetch_series(study_uid, series_uid, spool)
        assert sorted(stored) == [(series_uid, study_uid, True)] * 3
        fetched = sorted(pydicom.dcmread(p).SOPInstanceUID for p in spool.instances(series_uid))
        assert fetched == sorted(pydicom.dcmread(p).SOPInstanceUID for p in paths)
        original = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).pixel_array for p in paths}
        for path in spool.instances(series_uid):
            assert (pydicom.dcmread(path).pixel_array == original[path.stem]).all()


def test_send_both_protocols(orthanc, tmp_path, web_env):
    for client in clients(orthanc):
        study_uid, _, paths = fresh_series("CT_small.dcm", tmp_path / type(client).__name__)
        client.send(pydicom.dcmread(paths[0]))
        assert orthanc.sop_uids(study_uid) == [pydicom.dcmread(paths[0]).SOPInstanceUID]


def test_dicomweb_credentials_from_file_and_refused_without(orthanc, tmp_path, monkeypatch):
    for var in ("USERNAME", "PASSWORD", "TOKEN"):
        monkeypatch.delenv(f"LWSEG_DICOMWEB_{var}", raising=False)
    with pytest.raises(TransportError, match="^QIDO-RS at web: HTTP 401 Unauthorized$"):
        WebClient(Peer(name="web", dicomweb=orthanc.dicomweb)).find_series(series_uid="1.2.3")
    (tmp_path / "creds.json").write_text(json.dumps({"username": USER, "password": PASSWORD}))
    (tmp_path / "node.json").write_text(
        json.dumps(
            {"spool_dir": "spool", "peers": {"web": {"dicomweb": orthanc.dicomweb, "credentials_file": "creds.json"}}}
        )
    )
    config = load_config(tmp_path / "node.json")
    assert config.spool_dir == tmp_path / "spool"
    assert WebClient(config.peer("web")).find_series(series_uid="1.2.3") == []


def test_dicomweb_token_from_environment_is_sent(orthanc, monkeypatch):
    """Orthanc knows no bearer tokens, so a token (and only a token) is refused: it did replace basic auth."""
    monkeypatch.setenv("LWSEG_PACS_TOKEN", "a-token")
    monkeypatch.setenv("LWSEG_PACS_USERNAME", USER)
    peer = Peer(name="web", dicomweb=orthanc.dicomweb, credentials_env="LWSEG_PACS")
    assert peer.credentials() == {"token": "a-token"}
    with pytest.raises(TransportError, match="HTTP 401"):
        WebClient(peer).find_series(series_uid="1.2.3")


def test_unreachable_or_refusing_peer_raises(orthanc):
    with pytest.raises(TransportError, match="failed or was rejected"):
        DimseClient(Peer(name="x", ae_title="ORTHANC", host="127.0.0.1", port=1), "LWSEG", timeout=5).find_series("1")
