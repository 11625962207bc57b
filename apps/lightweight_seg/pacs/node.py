"""The node: spool + job store + workers that segment a series and send its SEG; plus the C-STORE SCP (listener).

Nothing lost: an instance is acknowledged only once it is durably in the spool, and every spooled series has a job
(re-created from the spool at start-up if the node died in between). Exactly once: a SEG's UIDs are derived from
the source series and its instances, a SEG is sent only if no acknowledged send is recorded for it, and the record is
written after the destination acknowledged it; a crash between the two re-sends the same SOP Instance UID, which the
PACS stores once.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable

from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from .config import Config
from .jobs import Job, JobStore
from .spool import RejectedObject, Spool
from .transport import client_for

log = logging.getLogger(__name__)

# Namespace for the SEG UIDs this node derives; changing it would make a restarted node send duplicates.
_UID_NAMESPACE = "lightweight-seg/pacs/seg/v1"


def short(uid: str) -> str:
    """A stable, non-identifying tag for a series in logs above DEBUG."""
    return hashlib.sha1(uid.encode()).hexdigest()[:10]


class JobError(RuntimeError):
    """A job failed for a reason worth showing in the status (one line)."""


class Node:
    """Everything that works on the spool; `listen` and `pull` in the CLI both drive one of these."""

    def __init__(self, config: Config):
        self.config = config
        self.spool = Spool(config.spool_dir)
        self.jobs = JobStore(self.spool.root / "jobs.sqlite")
        self._models = None
        self._models_lock = threading.Lock()
        self.server = None

    def recover(self) -> None:
        """Take the spool, then make it and the job store agree after any stop, including `kill -9`."""
        self.spool.lock()
        removed = self.spool.remove_temporaries()
        requeued = self.jobs.recover(self.config.max_attempts)
        missing = sum(
            self.jobs.reconcile(uid, len(self.spool.instances(uid)), self.config.quiet_seconds, self.config.destination)
            for uid in self.spool.series_uids()
        )
        if removed or requeued or missing:
            log.info(
                "recovered: %d partial files removed, %d interrupted jobs re-queued, %d series re-registered",
                removed,
                requeued,
                missing,
            )

    # -- receiving -------------------------------------------------------------------------------------------------

    def add(self, stored: Iterable[tuple[str, str, bool]], quiet: float, destination: str | None) -> set[str]:
        """Register spooled instances with their series' jobs; returns the series UIDs."""
        series = set()
        for series_uid, study_uid, is_new in stored:
            self.jobs.received(series_uid, study_uid, is_new, quiet, destination)
            series.add(series_uid)
        return series

    def _on_store(self, event) -> int:
        """C-STORE: acknowledge only once the instance is on disk and its job knows about it."""
        calling = event.assoc.requestor.ae_title
        try:
            stored = self.spool.store_raw(event.file_meta, event.request.DataSet.getvalue(), lambda: event.dataset)
        except RejectedObject as exc:
            self.jobs.reject(f"rejected/{exc.path.name}", f"{exc}; sent by {calling}; kept as {exc.path}")
            log.warning("rejected an object from %s: %s", calling, exc)
            return 0xA900
        except OSError as exc:
            log.error("cannot spool an instance from %s: %s", calling, exc.strerror)
            return 0xA700
        self.add([stored], self.config.quiet_seconds, self.config.destination)
        log.debug("spooled %s from %s (series %s)", event.request.AffectedSOPInstanceUID, calling, stored[0])
        return 0x0000

    def start_server(self) -> None:
        """Start the C-STORE / C-ECHO SCP in the background; only the allow-listed calling AE titles get in."""
        if not self.config.allowed_calling_aets:
            raise ValueError("allowed_calling_aets is empty: name the AE titles that may send to this node")
        ae = AE(ae_title=self.config.ae_title)
        ae.require_calling_aet = list(self.config.allowed_calling_aets)
        ae.maximum_associations = self.config.max_associations
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self.server = ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        log.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.config.port)

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # -- working ---------------------------------------------------------------------------------------------------

    @property
    def models(self):
        """Every served bundle (the configured bundle or folder of bundles, else the shipped ones) and their models,
        each loaded once and kept for every series."""
        with self._models_lock:
            if self._models is None:
                from lightweight_seg.routing import ModelRouter

                self._models = ModelRouter.from_path(self.config.bundle_root, force=self.config.model)
            return self._models

    def warm_up(self) -> None:
        """Import the pipeline and load every model now, so the first series waits for none."""
        import lightweight_seg.pipeline  # noqa: F401

        started = time.perf_counter()
        backends = self.models.warm_up()
        log.info("model ready: %s (loaded in %.1f s)",
                 ", ".join(f"{name} ({backend})" for name, backend in backends.items()), time.perf_counter() - started)

    def work(self, stop: threading.Event, done: Callable[[], bool] | None = None, only: set[str] | None = None):
        """Run jobs until `stop` is set or `done()` says so; `only` limits the worker to those series."""
        while not stop.is_set():
            try:
                job = self.jobs.claim(only)
            except sqlite3.Error as exc:  # e.g. a full disk: keep the worker alive and try again
                log.error("cannot claim a job: %s", exc)
                stop.wait(5)
                continue
            if job is not None:
                self.run(job)
            elif done is not None and done():
                return
            else:
                stop.wait(0.2)

    def run(self, job: Job) -> None:
        tag = short(job.series_uid)
        log.info("job %s: attempt %d of %d", tag, job.attempts, self.config.max_attempts)
        try:
            seg_uid, note = self._segment_and_send(job)
        except Exception as exc:  # any failure of one series is recorded on its job and must not stop the node
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            state = self.jobs.fail(job, reason, self.config.max_attempts, self.config.retry_seconds)
            log.warning("job %s: %s (%s)", tag, state, type(exc).__name__)
            log.debug("job %s (%s): %s", tag, job.series_uid, reason)
            return
        self.jobs.finish(job, seg_uid, note)
        log.info("job %s: done", tag)

    def _segment_and_send(self, job: Job) -> tuple[str, str | None]:
        from lightweight_seg.pipeline import segment_paths

        if job.destination is None:
            raise JobError("no destination configured for this job")
        destination = self.config.peer(job.destination)
        paths = self.spool.instances(job.series_uid)
        if not paths:
            raise JobError("no instances of this series in the spool")
        result = segment_paths(
            self.spool.series_dir(job.series_uid),  # its hidden .tmp files (instances still arriving) are skipped
            self.spool.fresh_output_dir(job.series_uid),
            models=self.models,
            rules=self.config.rules,
        )
        spool_prefix = f"{self.spool.root}/"
        problems = "; ".join(dict.fromkeys(message.replace(spool_prefix, "") for _, message in result.errors))
        if not result.outputs and result.skipped and not result.errors:  # no served model is for this series
            return "", "not segmented: " + "; ".join(dict.fromkeys(message for _, message in result.skipped))
        if not result.outputs:
            raise JobError(problems or "the pipeline produced no segmentation")
        key = [_UID_NAMESPACE, job.series_uid, *sorted(p.stem for p in paths)]
        client, seg_uids = None, []
        for index, output in enumerate(result.outputs):
            seg = dcmread(output.seg_path)
            seg.SeriesInstanceUID = generate_uid(entropy_srcs=[*key, "series"])
            seg.SOPInstanceUID = generate_uid(entropy_srcs=[*key, "instance", str(index)])
            seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
            seg.save_as(output.seg_path, enforce_file_format=True)
            if not self.jobs.was_sent(seg.SOPInstanceUID, destination.name):
                client = client or client_for(destination, self.config.ae_title)
                client.send(seg)
                self.jobs.record_sent(seg.SOPInstanceUID, destination.name, job.series_uid)
            seg_uids.append(str(seg.SOPInstanceUID))
        return ",".join(seg_uids), (f"partly segmented: {problems}" if problems else None)
