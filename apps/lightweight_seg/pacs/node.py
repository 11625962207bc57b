"""The node: spool + job store + workers that segment a series and send its SEG; plus the C-STORE SCP (listener).

Nothing lost: an instance is acknowledged only once it is durably in the spool, and every spooled series has a job
(re-created from the spool at start-up if the node died in between). Exactly once: a SEG's SOP Instance UID is derived
from the source series and its instances (its Series Instance UID from the source series alone, so that a later SEG
of a grown series joins it), a SEG is sent only if no acknowledged send is recorded for it, and the record is written
after the destination acknowledged it; a crash between the two re-sends the same SOP Instance UID, which the PACS
stores once. A SEG that could not be sent is kept and only re-sent. The measurement SR beside a SEG goes the same
way, right after it: its SOP Instance UID is derived from the SEG's, and it references the SEG by its derived UIDs.

Hostile peers: connections are counted and checked per address at accept, before pynetdicom reads a byte; the
A-ASSOCIATE-RQ must come within `association_request_timeout`; a PDU header claiming more than `max_pdu_size` ends
the association before its body is read.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable

from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from lightweight_nets.errors import first_line

from . import dimse_status
from .config import Config, ConfigError
from .jobs import Job, JobStore
from .spool import RejectedObject, Spool
from .transport import client_for

log = logging.getLogger(__name__)

# Namespace for the SEG UIDs this node derives; changing it would make a restarted node send duplicates.
_UID_NAMESPACE = "lightweight-seg/pacs/seg/v1"


def short(uid: str) -> str:
    """A stable, non-identifying tag for a series in logs above DEBUG."""
    return hashlib.sha1(uid.encode()).hexdigest()[:10]


def sr_uid_of(seg_uid: str) -> str:
    """The SOP Instance UID of the measurement SR beside the SEG ``seg_uid``: derived from it, so that the SR of any
    SEG ever sent is known without storing it."""
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, seg_uid, "sr"])


def _replace_uids(dataset, new: dict[str, str]) -> None:
    """Every UI value of ``dataset`` (nested sequences included) that is a key of ``new`` becomes its value."""

    def replace(ds, element) -> None:
        if element.VR == "UI" and isinstance(element.value, str) and element.value in new:
            element.value = new[element.value]

    dataset.walk(replace)


class JobError(RuntimeError):
    """A job failed for a reason worth showing in the status (one line)."""


class SendError(RuntimeError):
    """The SEG is written but the destination did not take it: only the send is tried again, later."""


class _GuardedServer(ThreadedAssociationServer):
    """pynetdicom's server, refusing a connection before any byte is read (no thread, no association) when its
    address is not allowed or already holds `max_associations_per_host` connections. A connection counts from
    its accept until its association's thread has ended."""

    node: Node
    daemon_threads = True  # a request thread now lives as long as its association: never hold the exit for it

    def verify_request(self, request, client_address) -> bool:
        return self.node._admit(client_address[0])

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)  # starts the association's thread
            assoc = self.node._opened.pop(threading.get_ident(), None)  # noted by EVT_CONN_OPEN in this thread
            if assoc is not None:
                assoc.join()
                self.node._deadlines.pop(assoc, None)
        finally:
            self.node._left(client_address[0])


class _NodeAE(AE):
    """An AE whose background server is a `_GuardedServer` for `node`."""

    def __init__(self, node: Node, **kwargs):
        super().__init__(**kwargs)
        self._node = node

    def make_server(self, address, ae_title=None, contexts=None, ssl_context=None, evt_handlers=None, **kwargs):
        if kwargs.get("server_class") is ThreadedAssociationServer:
            kwargs["server_class"] = type("GuardedServer", (_GuardedServer,), {"node": self._node})
        return super().make_server(address, ae_title, contexts, ssl_context, evt_handlers, **kwargs)


class Node:
    """Everything that works on the spool; `listen` and `pull` in the CLI both drive one of these."""

    def __init__(self, config: Config):
        self.config = config
        self.spool = Spool(config.spool_dir)
        self.jobs = JobStore.in_spool(self.spool.root)
        self._models = None
        self._models_lock = threading.Lock()
        self.server = None
        self._allowed_hosts = [ipaddress.ip_network(h, strict=False) for h in config.allowed_hosts]
        self._delivering: dict = {}  # association -> the series it delivered instances of
        self._lock = threading.Lock()
        self._refused: dict[str, float] = {}  # address -> when a refusal was last logged
        self._connections: dict[str, int] = {}  # address -> its open connections
        self._opened: dict[int, object] = {}  # server request thread id -> the association it started
        self._deadlines: dict = {}  # association not yet established -> when its peer's time is up
        self._sending: dict[int, Job] = {}  # worker thread id -> the job whose SEG it is sending

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

    # Connections: checked before pynetdicom reads a byte; associations: which series each one delivered.

    def _admit(self, host: str) -> bool:
        """Whether a new connection from `host` is accepted (then it counts until `_left`)."""
        refusal = None
        if self._allowed_hosts:
            address = ipaddress.ip_address(host.split("%")[0])
            if not any(address in network for network in self._allowed_hosts):
                refusal = "address not in allowed_hosts"
        with self._lock:
            if refusal is None and self._connections.get(host, 0) >= self.config.max_associations_per_host:
                refusal = f"already {self._connections[host]} connections from it (max_associations_per_host)"
            if refusal is None:
                self._connections[host] = self._connections.get(host, 0) + 1
                return True
            now = time.monotonic()
            if now - self._refused.get(host, -60) < 60:  # one line a minute per address, however hard it tries
                return False
            self._refused[host] = now
        log.warning("refused connections from %s: %s", host, refusal)
        return False

    def _left(self, host: str) -> None:
        with self._lock:
            self._connections[host] -= 1
            if not self._connections[host]:
                del self._connections[host]

    def _on_conn_open(self, event) -> None:
        """Before the association reads anything: bound each PDU's size, and every read until the association is
        established by one deadline (a peer that dribbles its A-ASSOCIATE-RQ byte by byte is cut off too)."""
        assoc = event.assoc
        self._opened[threading.get_ident()] = assoc
        self._deadlines[assoc] = time.monotonic() + self.config.association_request_timeout
        assoc_socket = assoc.dul.socket
        raw = assoc_socket.socket
        raw.settimeout(self.config.association_request_timeout)
        limit, host = self.config.max_pdu_size, event.address[0]

        def cut(why: str, *args) -> bytearray:
            log.warning("closed a connection from %s: " + why, host, *args)
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return bytearray()  # pynetdicom reads this as the connection closed mid-PDU

        def recv(nr_bytes: int) -> bytearray:
            # pynetdicom reads a PDU's 6-byte header, then as many bytes as the header claims, all into memory
            if nr_bytes > limit:
                return cut("a PDU of %d bytes (max_pdu_size %d)", nr_bytes, limit)
            data = bytearray()
            while len(data) < nr_bytes:
                deadline = self._deadlines.get(assoc)
                if deadline is not None:
                    if time.monotonic() >= deadline:
                        return cut("no association within %g s", self.config.association_request_timeout)
                    raw.settimeout(deadline - time.monotonic())
                try:
                    chunk = raw.recv(min(nr_bytes - len(data), 65536))
                except TimeoutError:
                    if deadline is None:
                        raise  # established: pynetdicom's network timeout
                    return cut("no association within %g s", self.config.association_request_timeout)
                if not chunk:
                    break
                data += chunk
            return data

        assoc_socket.recv = recv

    def _on_established(self, event) -> None:
        self._deadlines.pop(event.assoc, None)
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.settimeout(self.config.network_timeout)

    def _on_association_end(self, event) -> None:
        """Released: the sender says it sent everything. Aborted (a killed sender, a cut line): what it delivered is
        possibly incomplete and waits `aborted_quiet_seconds` for the sender's retry."""
        aborted = event.event == evt.EVT_ABORTED
        with self._lock:
            ended = {event.assoc: self._delivering.pop(event.assoc, set())}
            # an association that ended without either event (its DUL died) counts as aborted
            ended_silently = [assoc for assoc in self._delivering if not assoc.is_alive()]
            stale = {assoc: self._delivering.pop(assoc) for assoc in ended_silently}
        for assoc, series in [*ended.items(), *stale.items()]:
            if series:
                quiet, longer = self.config.quiet_seconds, self.config.aborted_quiet_seconds
                self.jobs.association_ended(series, aborted or assoc in stale, quiet, longer)
                if aborted or assoc in stale:
                    log.warning(
                        "an association from %s was aborted: %d series possibly incomplete, waiting %g s"
                        " for the sender to retry",
                        assoc.requestor.ae_title,
                        len(series),
                        longer,
                    )

    def _on_store(self, event) -> int:
        """C-STORE: acknowledge only once the instance is on disk and its job knows about it."""
        calling = event.assoc.requestor.ae_title
        try:
            stored = self.spool.store_raw(event.file_meta, event.request.DataSet.getvalue(), lambda: event.dataset)
        except RejectedObject as exc:
            self.jobs.reject(f"rejected/{exc.path.name}", f"{exc}; sent by {calling}; kept as {exc.path}")
            log.warning("rejected an object from %s: %s", calling, exc)
            return dimse_status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        except OSError as exc:
            log.error("cannot spool an instance from %s: %s", calling, exc.strerror)
            return dimse_status.OUT_OF_RESOURCES
        with self._lock:
            delivered = self._delivering.setdefault(event.assoc, set())
            opened = stored[0] not in delivered
            delivered.add(stored[0])
        series_uid, study_uid, is_new = stored
        self.jobs.received(series_uid, study_uid, is_new, self.config.quiet_seconds, self.config.destination, opened)
        log.debug("spooled %s from %s (series %s)", event.request.AffectedSOPInstanceUID, calling, stored[0])
        return dimse_status.SUCCESS

    def start_server(self) -> None:
        """Start the C-STORE / C-ECHO SCP in the background; only the allow-listed calling AE titles get in."""
        if not self.config.allowed_calling_aets:
            raise ConfigError("allowed_calling_aets is empty: name the AE titles that may send to this node")
        ae = _NodeAE(self, ae_title=self.config.ae_title)
        ae.require_calling_aet = list(self.config.allowed_calling_aets)  # checked on the A-ASSOCIATE-RQ
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = self.config.max_pdu_size
        ae.acse_timeout = self.config.association_request_timeout
        ae.network_timeout = self.config.network_timeout
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_association_end),
            (evt.EVT_ABORTED, self._on_association_end),
        ]
        self.server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        waiting = self.jobs.restart_quiet(self.config.quiet_seconds, self.config.aborted_quiet_seconds)
        if waiting:
            log.info("%d queued series wait their quiet time again (their senders may still be reconnecting)", waiting)
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
        log.info(
            "model ready: %s (loaded in %.1f s)",
            ", ".join(f"{name} ({backend})" for name, backend in backends.items()),
            time.perf_counter() - started,
        )

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
        prepared = job.prepared
        if prepared is not None and not all((self.spool.root / file).exists() for file in prepared):
            prepared = None  # its written SEG is gone: segment again
        if prepared is None:
            log.info("job %s: attempt %d of %d", tag, job.attempts, self.config.max_attempts)
        else:
            log.info("job %s: sending its SEG again (try %d)", tag, job.send_failures + 1)
        try:
            if prepared is None:
                prepared = self._segment(job)
                if prepared is None:  # no model is for this series
                    return
            if self.jobs.generation(job.series_uid) != job.generation:  # it grew meanwhile: a SEG of it all
                self.jobs.finish(job, "", "new instances arrived while it was segmented")
                log.info("job %s: new instances arrived meanwhile, queued again", tag)
                return
            seg_uids, note = self._send(job, prepared)
        except SendError as exc:
            delay = self.jobs.send_failed(job, str(exc), self.config.retry_seconds, self.config.max_retry_seconds)
            log.warning("job %s: send failed, SEG kept, next try in %g s", tag, delay)
            log.debug("job %s (%s): %s", tag, job.series_uid, exc)
            return
        except Exception as exc:  # any failure of one series is recorded on its job and must not stop the node
            reason = first_line(exc)
            state = self.jobs.fail(job, reason, self.config.max_attempts, self.config.retry_seconds)
            log.warning("job %s: %s (%s)", tag, state, type(exc).__name__)
            log.debug("job %s (%s): %s", tag, job.series_uid, reason)
            return
        self.jobs.finish(job, seg_uids, note)
        log.info("job %s: done", tag)

    def _segment(self, job: Job) -> list[str] | None:
        """Run the pipeline and write the SEGs with their derived UIDs; returns their paths relative to the spool
        (recorded on the job, so that a failed send only re-sends them), or None if no model is for the series."""
        from lightweight_seg.pipeline import segment_paths

        if job.destination is None:
            raise JobError("no destination configured for this job")
        self.config.peer(job.destination)
        paths = self.spool.instances(job.series_uid)
        if not paths:
            raise JobError("no instances of this series in the spool")
        result = segment_paths(
            self.spool.series_dir(job.series_uid),  # its hidden temporaries (instances still arriving) are skipped
            self.spool.fresh_output_dir(job.series_uid),
            models=self.models,
            rules=self.config.rules,
        )
        spool_prefix = f"{self.spool.root}/"
        problems = "; ".join(dict.fromkeys(message.replace(spool_prefix, "") for _, message in result.errors))
        if not result.outputs and result.skipped and not result.errors:  # no served model is for this series
            self.jobs.finish(job, "", "not segmented: " + "; ".join(dict.fromkeys(m for _, m in result.skipped)))
            return None
        if not result.outputs:
            raise JobError(problems or "the pipeline produced no segmentation")
        notes = [f"partly segmented: {problems}"] if problems else []
        if job.incomplete:
            notes.append(
                f"possibly incomplete: the association that delivered it was aborted and no sender"
                f" completed it within {self.config.aborted_quiet_seconds:g} s"
            )
        # The SEG series is the same for every version of the source series (a later, fuller SEG joins it); the
        # SOP Instance UID is derived from the instances it covers, so a job run twice yields the same one.
        # The measurement SR beside a SEG follows it: its own derived series, a SOP Instance UID derived from the
        # SEG's, and its references to the SEG pointed at the SEG's derived UIDs.
        series_uid = generate_uid(entropy_srcs=[_UID_NAMESPACE, job.series_uid, "seg-series"])
        sr_series_uid = generate_uid(entropy_srcs=[_UID_NAMESPACE, job.series_uid, "sr-series"])
        key = [_UID_NAMESPACE, job.series_uid, *sorted(p.stem for p in paths)]
        earlier = len(self._sent_segs(job.series_uid, job.destination))
        files = []
        for index, output in enumerate(result.outputs):
            seg = dcmread(output.seg_path)
            derived = {
                seg.SeriesInstanceUID: series_uid,
                seg.SOPInstanceUID: generate_uid(entropy_srcs=[*key, "instance", str(index)]),
            }
            seg.SeriesInstanceUID, seg.SOPInstanceUID = derived[seg.SeriesInstanceUID], derived[seg.SOPInstanceUID]
            seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
            seg.InstanceNumber = earlier + index + 1  # a replacement sorts after what it replaces
            seg.save_as(output.seg_path, enforce_file_format=True)
            files.append(str(output.seg_path.relative_to(self.spool.root)))
            if output.sr_path is not None:
                sr = dcmread(output.sr_path)
                _replace_uids(sr, derived)
                sr.SeriesInstanceUID, sr.SOPInstanceUID = sr_series_uid, sr_uid_of(seg.SOPInstanceUID)
                sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
                sr.InstanceNumber = seg.InstanceNumber
                sr.save_as(output.sr_path, enforce_file_format=True)
                files.append(str(output.sr_path.relative_to(self.spool.root)))
        self.jobs.prepare(job, files, "; ".join(notes) or None)
        return files

    def _sent_segs(self, series_uid: str, destination: str) -> list[str]:
        """The SOP Instance UIDs of the SEGs of this series the destination acknowledged (not their SRs)."""
        sent = [uid for uid, _ in self.jobs.sent_for(series_uid, destination)]
        srs = {sr_uid_of(uid) for uid in sent}
        return [uid for uid in sent if uid not in srs]

    def _send(self, job: Job, files: list[str]) -> tuple[str, str | None]:
        """Send each written SEG, and the measurement SR after its SEG, not yet acknowledged by the destination
        (each recorded once acknowledged); a SEG of a series that grew after an earlier SEG was sent joins that
        SEG's series, and the job says so. Returns the SEG UIDs and the note."""
        destination = self.config.peer(job.destination)
        earlier = self._sent_segs(job.series_uid, destination.name)
        client, seg_uids = None, []
        for file in files:
            dataset = dcmread(self.spool.root / file)
            if not self.jobs.was_sent(dataset.SOPInstanceUID, destination.name):
                client = client or client_for(destination, self.config.ae_title)
                self._sending[threading.get_ident()] = job
                try:
                    client.send(dataset)
                except Exception as exc:
                    raise SendError(first_line(exc)) from exc
                finally:
                    self._sending.pop(threading.get_ident(), None)
                self.jobs.record_sent(dataset.SOPInstanceUID, destination.name, job.series_uid)
            if dataset.Modality == "SEG":
                seg_uids.append(str(dataset.SOPInstanceUID))
        replaced = [uid for uid in earlier if uid not in seg_uids]
        notes = [self.jobs.get(job.series_uid).seg_note] if self.jobs.get(job.series_uid).seg_note else []
        if replaced:
            notes.append(
                f"replaces {len(replaced)} earlier SEG{'s' * (len(replaced) > 1)} sent before the series"
                f" grew ({', '.join(replaced)}): same SEG series, higher Instance Number; {destination.name}"
                " keeps the earlier one unless it is removed there"
            )
            log.warning(
                "job %s: the series grew after its SEG was sent; a replacing SEG was sent", short(job.series_uid)
            )
        return ",".join(seg_uids), "; ".join(notes) or None

    def abandon_sends(self) -> int:
        """At shutdown: jobs whose workers are waiting on a destination go back to the queue (their written SEG is
        sent at the next start); returns how many."""
        jobs = list(self._sending.values())
        for job in jobs:
            self.jobs.interrupted(job, "shut down while sending; its written SEG is sent at the next start")
        return len(jobs)

    def sending(self, thread: threading.Thread) -> bool:
        return thread.ident in self._sending
