"""A destination that is down, answers 503 or never answers: each try is one bounded attempt with a one-line reason,
the written SEG is kept and only re-sent with a growing wait until the PACS is back, and SIGTERM does not wait."""

import signal
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
from pacs_support import CT_SERIES, cli, free_port, fresh_series, start_orthanc, storescu, wait_for, write_config

import lightweight_seg.pipeline
from lightweight_seg.pacs.config import load_config
from lightweight_seg.pacs.node import Node


@contextmanager
def unavailable_http():
    """An HTTP server that answers every request 503 (a proxy in front of a PACS that is down); yields (URL, hits)."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", hits
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_http():
    """A port that takes connections (the kernel's backlog) and never answers; yields (URL, listening socket)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/dicom-web", sock
    finally:
        sock.close()


def spooled_node(config, tmp_path):
    node = Node(load_config(config))
    study_uid, series_uid, paths = fresh_series(CT_SERIES, tmp_path / "src")
    stored = [node.spool.store_dataset(pydicom.dcmread(p)) for p in paths]
    node.add(stored, quiet=0, destination=node.config.destination)
    return node, study_uid, series_uid


def test_dicomweb_destination_down_is_one_bounded_attempt_with_a_one_line_reason(orthanc, tmp_path):
    refused = f"http://127.0.0.1:{free_port()}/dicom-web"
    with unavailable_http() as (unavailable, hits), silent_http() as (silent, _):
        peers = {
            **orthanc.peers(),
            "unavailable": {"dicomweb": unavailable, "timeout": 1},
            "silent": {"dicomweb": silent, "timeout": 1},
            "refused": {"dicomweb": refused, "timeout": 1},
        }
        reasons = {
            "unavailable": "STOW-RS to unavailable: HTTP 503 Service Unavailable",
            "silent": "STOW-RS to silent: no answer within 1 s",
            "refused": f"STOW-RS to refused: cannot connect to {refused} (Connection refused)",
        }
        for name, reason in reasons.items():
            (tmp_path / name).mkdir()
            config = write_config(
                tmp_path / name / "node.json", orthanc, peers=peers, destination=name, retry_seconds=0
            )
            node, _, series_uid = spooled_node(config, tmp_path / name)
            node.run(node.jobs.claim())  # segments, writes the SEG, fails to send it
            began = time.monotonic()
            node.run(node.jobs.claim())  # only sends again
            took = time.monotonic() - began
            job = node.jobs.get(series_uid)
            assert (job.state, job.error) == ("failed", f"send failed 2 times: {reason}")
            assert took < 2.5, f"{name}: one try took {took:.1f} s"  # dicomweb-client alone retried for 30 s
            node.jobs.close()
        assert len(hits) == 2  # one request per try, no hidden retries under ours
        status = cli(tmp_path / "unavailable" / "node.json", "status")
        (line,) = [line for line in status.stdout.splitlines() if line.startswith("failed")]
        assert reasons["unavailable"] in line and "; next try " in line and "urllib3" not in status.stdout


def test_failed_send_keeps_its_seg_backs_off_and_resumes_when_the_pacs_is_back(orthanc, tmp_path, monkeypatch):
    later = free_port()  # nothing listens here yet
    peers = {**orthanc.peers(), "later": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": later, "timeout": 5}}
    config = write_config(
        tmp_path / "node.json",
        orthanc,
        peers=peers,
        destination="later",
        max_attempts=1,
        retry_seconds=0.5,
        max_retry_seconds=2.0,
    )
    runs, segment_paths = [], lightweight_seg.pipeline.segment_paths
    counted = lambda *args, **kwargs: runs.append(1) or segment_paths(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr(lightweight_seg.pipeline, "segment_paths", counted)
    node, study_uid, series_uid = spooled_node(config, tmp_path)
    stop = threading.Event()
    worker = threading.Thread(target=node.work, args=(stop,))
    worker.start()
    try:
        seen = {}  # send failures -> (state, wait before the next try)

        def failed_four_times():
            job = node.jobs.get(series_uid)
            if job.state != "running":
                seen.setdefault(job.send_failures, (job.state, round(job.not_before - job.updated, 1)))
            return job.send_failures >= 4 and job.state == "failed" and job

        job = wait_for(failed_four_times, 60, 0.01, "four failed sends")
        assert job.error == "send failed 4 times: association with later (ORTHANC) failed or was rejected"
        # doubling up to max_retry_seconds, never parked; waits of 0.5 s or more, so that 10 ms polls see every one
        expected = {1: 0.5, 2: 1.0, 3: 2.0, 4: 2.0}
        assert {n: seen[n] for n in seen if n} == {n: ("failed", wait) for n, wait in expected.items()}
        pacs = start_orthanc(tmp_path / "pacs", dicom_port=later)  # the PACS comes back
        try:
            job = wait_for(lambda: (job := node.jobs.get(series_uid)).state == "done" and job, 30, 0.1, "the SEG sent")
            assert pacs.sop_uids(study_uid, "SEG") == job.seg_uid.split(",")
        finally:
            pacs.stop()
    finally:
        stop.set()
        worker.join()
        node.jobs.close()
    assert len(runs) == 1  # segmented once; every later try only re-sent the kept SEG


def test_sigterm_does_not_wait_for_a_silent_destination(orthanc, listener_factory, tmp_path):
    with silent_http() as (silent, sock):
        peers = {**orthanc.peers(), "silent": {"dicomweb": silent, "timeout": 120}}
        config = write_config(tmp_path / "node.json", orthanc, peers=peers, destination="silent")
        listener = listener_factory(config)
        _, series_uid, paths = fresh_series(CT_SERIES, tmp_path / "src")
        assert storescu(paths, listener.port).returncode == 0
        sock.settimeout(120)
        connection, _ = sock.accept()  # the node is sending its SEG (and will get no answer)
        began = time.monotonic()
        listener.process.send_signal(signal.SIGTERM)
        assert listener.process.wait(timeout=20) == 0
        connection.close()
    assert time.monotonic() - began < 10
    status = cli(config, "status")
    (line,) = [line for line in status.stdout.splitlines() if series_uid in line]
    assert line.startswith("queued") and "shut down while sending; its written SEG is sent at the next start" in line
