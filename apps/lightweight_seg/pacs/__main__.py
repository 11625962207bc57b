"""CLI: `python -m lightweight_seg.pacs {listen,pull,status,retry} --config node.json ...` (see README.md here)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from typing import TYPE_CHECKING

from .config import Config, ConfigError, load_config
from .jobs import STATES, JobStore

if TYPE_CHECKING:  # imported for real only by listen and pull: the node brings DICOM networking and the pipeline
    from .node import Node

log = logging.getLogger("lightweight_seg.pacs")


def _listen(node: Node, args) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.recover()
    node.start_server()  # receive at once; the model loads meanwhile
    node.warm_up()
    workers = [threading.Thread(target=node.work, args=(stop,), daemon=True) for _ in range(node.config.workers)]
    for worker in workers:
        worker.start()
    stop.wait()
    log.info("stopping: no new associations, finishing running jobs")
    node.stop_server()
    # Segmenting jobs finish; a worker waiting on a destination is not waited for: its job goes back to the queue
    # and its written SEG (same UIDs) is sent at the next start.
    while any(worker.is_alive() and not node.sending(worker) for worker in workers):
        for worker in workers:
            worker.join(timeout=0.1)
    abandoned = node.abandon_sends()
    if abandoned:
        log.info("%d job(s) were sending: queued again, sent at the next start", abandoned)
    return 0


def _pull(node: Node, args) -> int:
    from .transport import client_for

    destination = args.to or args.source
    query = dict(item.split("=", 1) for item in args.query)
    if not (args.study or args.series or query):
        raise SystemExit("pull: give --study, --series or --query")
    node.recover()
    client = client_for(node.config.peer(args.source), node.config.ae_title)
    matches = client.find_series(args.study, args.series, query)
    if not matches:
        print("no matching series", file=sys.stderr)
        return 1
    series = set()
    for study_uid, series_uid in matches:
        series |= node.add(client.fetch_series(study_uid, series_uid, node.spool), 0, destination)

    def finished() -> bool:  # a listener re-sends a written SEG until the destination takes it; a pull gives up
        jobs = [node.jobs.get(uid) for uid in series]
        return all(
            job.state in ("done", "parked") or (job.state == "failed" and job.send_failures >= node.config.max_attempts)
            for job in jobs
        )

    node.work(threading.Event(), done=finished, only=series)
    jobs = [node.jobs.get(uid) for uid in sorted(series)]
    for job in jobs:
        print(f"{job.series_uid}\t{job.state}\t{job.seg_uid or ''}\t{job.error or ''}")
    return 0 if all(job.state == "done" for job in jobs) else 1


def _status(store: JobStore, args) -> int:
    jobs = store.all()
    if args.json:
        print(json.dumps([job.__dict__ for job in jobs], indent=1))
        return 0
    counts = {state: sum(job.state == state for job in jobs) for state in STATES}
    print("  ".join(f"{state} {n}" for state, n in counts.items()))
    for job in jobs:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.updated))
        reason = job.error or ""
        if job.state == "failed":
            reason += time.strftime("; next try %H:%M:%S", time.localtime(job.not_before))
        print(f"{job.state:8} {job.attempts:2} tries  {updated}  {job.series_uid}  {reason}".rstrip())
    return 0


def _retry(store: JobStore, args) -> int:
    missing = [uid for uid in args.series if not store.retry(uid)]
    for uid in missing:
        print(f"{uid}: no parked or failed job", file=sys.stderr)
    return 1 if missing else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightweight_seg.pacs", description=__doc__)
    parser.add_argument("--config", required=True, help="node config (JSON)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs UIDs and file names; higher levels do not")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("listen", help="run the DICOM node: receive, segment after the quiet time, send the SEG")
    pull = sub.add_parser("pull", help="fetch series from a PACS, segment them, send the SEGs back")
    pull.add_argument("--from", dest="source", required=True, help="peer to fetch from (name in the config)")
    pull.add_argument("--to", help="peer to send the SEGs to (default: the --from peer)")
    pull.add_argument("--study", help="Study Instance UID")
    pull.add_argument("--series", help="Series Instance UID")
    pull.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="KEYWORD=VALUE",
        help="extra query filter, e.g. Modality=CT (repeatable)",
    )
    status = sub.add_parser("status", help="queued, running, done, failed and parked jobs, with failure reasons")
    status.add_argument("--json", action="store_true")
    retry = sub.add_parser("retry", help="give parked or failed series a fresh set of attempts")
    retry.add_argument("series", nargs="+", help="Series Instance UID")
    return parser


def _run_node(config: Config, args) -> int:
    """listen / pull: the node, its DICOM networking and the pipeline (torch, MONAI) it segments with."""
    from ..dicom_io import InputError
    from .node import Node

    node = Node(config)
    try:
        return {"listen": _listen, "pull": _pull}[args.command](node, args)
    except (RuntimeError, OSError, InputError) as exc:  # busy spool, bad bundle, PACS down
        return _fail(exc)
    except ConfigError as exc:  # listen without allowed_calling_aets, an unreadable credentials_file
        return _fail_config(exc, args.config)
    finally:
        node.jobs.close()


def _fail(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _fail_config(exc: ConfigError, config_path: str) -> int:
    return _fail(exc if exc.path else f"{config_path}: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Read and check the config first (a bad one is one line and exit status 2); `status` and `retry` need only
    the job database, so they never import the networking or model stack and answer at once."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        for name in (getattr(args, "source", None), getattr(args, "to", None)):
            if name is not None:
                config.peer(name)
    except ConfigError as exc:
        return _fail_config(exc, args.config)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:  # their INFO messages name UIDs of the data sets they handle
        for chatty in ("pynetdicom", "highdicom"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    if args.command in ("listen", "pull"):
        return _run_node(config, args)
    try:
        store = JobStore.in_spool(config.spool_dir)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"{config.spool_dir}: cannot open the job database: {exc}")
    try:
        return {"status": _status, "retry": _retry}[args.command](store, args)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
