"""Load and fault tests of the listener process against a real Orthanc (slow: CI runs them, skip while iterating).

Figures (series/minute, seconds from the last instance received to the SEG acknowledged by Orthanc) are printed;
run with -s to see them.
"""

import subprocess
import time

import pytest
from pacs_support import NODE_AET, SENDER_AET, fresh_series, wait_for, write_config

from lightweight_seg.pacs.jobs import JobStore


def make_series(tmp_path, count: int) -> list[tuple[str, str, list]]:
    """`count` distinct one-instance series (own Study/Series/SOP UIDs) from the real CT_small.dcm."""
    return [fresh_series("CT_small.dcm", tmp_path / "src" / str(n)) for n in range(count)]


def send_all_at_once(series, port: int) -> None:
    """One dcmtk storescu process per series, all started together."""
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", SENDER_AET, "-aec", NODE_AET, "127.0.0.1", str(port), *map(str, paths)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _, _, paths in series
    ]
    for sender in senders:
        output = sender.communicate(timeout=300)[0]
        assert sender.returncode == 0, output


def jobs_of(config) -> dict:
    store = JobStore(config.parent / "spool" / "jobs.sqlite")
    try:
        return {job.series_uid: job for job in store.all()}
    finally:
        store.close()


def assert_one_seg_per_series(orthanc, series, jobs) -> None:
    for study_uid, series_uid, _ in series:
        assert jobs[series_uid].state == "done", jobs[series_uid]
        assert orthanc.sop_uids(study_uid, "SEG") == [jobs[series_uid].seg_uid]


def figures(label: str, jobs, started: float) -> None:
    done = [job for job in jobs.values() if job.state == "done"]
    latency = sorted(job.updated - job.last_received for job in done)
    minutes = (max(job.updated for job in done) - started) / 60
    print(
        f"\n{label}: {len(done)} series in {minutes * 60:.1f} s = {len(done) / minutes:.1f} series/minute; "
        f"last instance received -> SEG stored: median {latency[len(latency) // 2]:.1f} s, max {latency[-1]:.1f} s"
    )


@pytest.mark.slow
def test_load_50_series_concurrently(orthanc, listener_factory, tmp_path):
    series = make_series(tmp_path, 50)
    # every sender is 127.0.0.1 here: let the one address hold them all at once
    config = write_config(tmp_path / "node.json", orthanc, quiet_seconds=1.0, max_associations_per_host=64)
    listener = listener_factory(config)
    started = time.time()
    send_all_at_once(series, listener.port)
    sent_s = time.time() - started
    uids = {series_uid for _, series_uid, _ in series}

    def all_done():
        jobs = jobs_of(config)
        return uids <= jobs.keys() and all(jobs[uid].state in ("done", "parked") for uid in uids) and jobs

    jobs = wait_for(all_done, 170, 1.0, "50 series to finish")
    assert_one_seg_per_series(orthanc, series, jobs)
    assert len(jobs) == 50
    print(f"\nload: 50 series received in {sent_s:.1f} s")
    figures("load", jobs, started)


@pytest.mark.slow
def test_kill_9_with_queued_and_running_work(orthanc, listener_factory, tmp_path):
    series = make_series(tmp_path, 16)
    config = write_config(
        tmp_path / "node.json", orthanc, quiet_seconds=0.5, max_attempts=3, max_associations_per_host=64
    )
    listener = listener_factory(config)
    started = time.time()
    send_all_at_once(series, listener.port)

    def mid_flight():
        states = [job.state for job in jobs_of(config).values()]
        return states.count("done") >= 2 and "running" in states and states.count("queued") >= 5 and states

    before = wait_for(mid_flight, 120, 0.05, "a running job with others queued")
    listener.kill()
    after_kill = jobs_of(config)
    assert [job.state for job in after_kill.values()].count("running") == 1
    restarted = listener_factory(config)
    uids = {series_uid for _, series_uid, _ in series}

    def all_done():
        jobs = jobs_of(config)
        return all(jobs[uid].state in ("done", "parked") for uid in uids) and jobs

    jobs = wait_for(all_done, 170, 0.5, "every series after the restart")
    assert_one_seg_per_series(orthanc, series, jobs)
    assert "interrupted jobs re-queued" in restarted.log()
    print(
        f"\nfault: killed with {before.count('done')} done, {before.count('running')} running, "
        f"{before.count('queued')} queued; after restart all {len(uids)} done, one SEG each"
    )
    figures("fault (includes the restart)", jobs, started)
