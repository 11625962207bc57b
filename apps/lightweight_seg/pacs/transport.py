"""Talking to a PACS: find series, fetch them into the spool, send a SEG; over DIMSE (pynetdicom) or DICOMweb.

DIMSE uses C-FIND, C-GET (no need for the PACS to know our address) and C-STORE; DICOMweb uses QIDO-RS, WADO-RS and
STOW-RS through dicomweb-client. Both clients offer the same three methods, so callers do not care which it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session, create_session_from_user_pass
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet

from lightweight_nets.errors import first_line

from . import dimse_status
from .config import Peer
from .spool import RejectedObject, Spool

log = logging.getLogger(__name__)

# C-GET: one context for the GET itself, the rest (at most 127) for the storage classes the PACS may send back.
_GET_STORAGE = [cx.abstract_syntax for cx in StoragePresentationContexts[:127]]


class TransportError(RuntimeError):
    """The peer could not be reached or refused / failed the request."""


class DimseClient:
    """C-FIND / C-GET / C-STORE against one DIMSE peer, as the local AE title."""

    def __init__(self, peer: Peer, local_ae: str, timeout: float = 60):
        self.peer = peer
        self.local_ae = local_ae
        self.timeout = timeout

    def _associate(self, ae: AE, **kwargs):
        for attr in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, attr, self.timeout)
        assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title, **kwargs)
        if not assoc.is_established:
            raise TransportError(f"association with {self.peer.name} ({self.peer.ae_title}) failed or was rejected")
        return assoc

    def find_series(self, study_uid: str | None = None, series_uid: str | None = None, query=None) -> list:
        """(study UID, series UID) of every series matching the UIDs and the extra DICOM keyword filters."""
        ae = AE(ae_title=self.local_ae)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = study_uid or ""
        identifier.SeriesInstanceUID = series_uid or ""
        for keyword, value in (query or {}).items():
            setattr(identifier, keyword, value)
        found = []
        assoc = self._associate(ae)
        try:
            for status, answer in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
                if not (dimse_status.pending(status) or dimse_status.code(status) == dimse_status.SUCCESS):
                    raise TransportError(
                        f"C-FIND failed at {self.peer.name}: {dimse_status.describe(status, dimse_status.FIND)}"
                    )
                if answer is not None and dimse_status.pending(status):
                    found.append((str(answer.StudyInstanceUID), str(answer.SeriesInstanceUID)))
        finally:
            assoc.release()
        return found

    def fetch_series(self, study_uid: str, series_uid: str, spool: Spool) -> list[tuple[str, str, bool]]:
        """C-GET one series into the spool; returns what `Spool.store_raw` returned for each instance."""
        stored, problems = [], []

        def on_store(event):
            try:
                stored.append(spool.store_raw(event.file_meta, event.request.DataSet.getvalue(), lambda: event.dataset))
            except RejectedObject as exc:
                problems.append(f"{exc} (kept as {exc.path.name})")
                return dimse_status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
            return dimse_status.SUCCESS

        ae = AE(ae_title=self.local_ae)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for uid in _GET_STORAGE:
            ae.add_requested_context(uid)
        roles = [build_role(uid, scp_role=True) for uid in _GET_STORAGE]
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = study_uid
        identifier.SeriesInstanceUID = series_uid
        assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            final = None
            for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
                final = status
        finally:
            assoc.release()
        failed = getattr(final, "NumberOfFailedSuboperations", 0) or 0
        if not dimse_status.done(final) or failed or problems:
            reason = "; ".join(problems) or dimse_status.describe(final, dimse_status.GET)
            raise TransportError(f"C-GET from {self.peer.name}: {failed} failed; {reason}")
        return stored

    def send(self, dataset: Dataset) -> None:
        """C-STORE one instance; raises unless the peer reports success."""
        ae = AE(ae_title=self.local_ae)
        syntaxes = list(
            dict.fromkeys([dataset.file_meta.TransferSyntaxUID, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        )
        ae.add_requested_context(dataset.SOPClassUID, syntaxes)
        assoc = self._associate(ae)
        try:
            status = assoc.send_c_store(dataset)
        finally:
            assoc.release()
        if not dimse_status.done(status):
            raise TransportError(f"C-STORE to {self.peer.name} failed: {dimse_status.describe(status)}")


def _root_cause(exc: BaseException) -> str:
    """The innermost OS-level reason of a requests / urllib3 failure ("Connection refused"), else ""."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        todo += [getattr(current, "reason", None), current.__cause__, current.__context__]
        todo += [arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)]
    return ""


class WebClient:
    """QIDO-RS / WADO-RS / STOW-RS against one DICOMweb peer; credentials from the peer's file or environment.

    dicomweb-client's own retries are off (they waited 2 + 4 + 8 + 16 s under the node's retries): one request per
    call, bounded by `timeout` to connect and `timeout` for each answer; the node's jobs do the retrying. Failures
    are raised as one-line `TransportError`s ("STOW-RS to pacs-web: HTTP 503 Service Unavailable").
    """

    def __init__(self, peer: Peer, timeout: float | None = None):
        self.peer = peer
        self.timeout = peer.timeout if timeout is None else timeout
        creds = peer.credentials()
        if "username" in creds:
            session = create_session_from_user_pass(creds["username"], creds["password"])
        else:
            session = create_session()
            if "token" in creds:
                session.headers["Authorization"] = f"Bearer {creds['token']}"
        self.client = DICOMwebClient(peer.dicomweb, session=session, timeout=(self.timeout, self.timeout))
        self.client.set_http_retry_params(retry=False)

    def _failure(self, what: str, exc: Exception) -> TransportError:
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            reason = f"HTTP {exc.response.status_code} {exc.response.reason or ''}".rstrip()
        elif isinstance(exc, requests.Timeout):
            reason = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, requests.ConnectionError):
            cause = _root_cause(exc)
            reason = f"cannot connect to {self.peer.dicomweb}" + (f" ({cause})" if cause else "")
        else:
            reason = type(exc).__name__ + (f": {first_line(exc)}" if str(exc).strip() else "")
        return TransportError(f"{what} {self.peer.name}: {reason}")

    def find_series(self, study_uid: str | None = None, series_uid: str | None = None, query=None) -> list:
        filters = dict(query or {})
        if series_uid:
            filters["SeriesInstanceUID"] = series_uid
        try:
            answers = self.client.search_for_series(study_instance_uid=study_uid, search_filters=filters)
        except requests.RequestException as exc:
            raise self._failure("QIDO-RS at", exc) from exc
        found = []
        for answer in answers:
            meta = Dataset.from_json(answer)
            found.append((str(meta.StudyInstanceUID), str(meta.SeriesInstanceUID)))
        return found

    def _iter_series(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        try:
            yield from self.client.iter_series(study_uid, series_uid)
        except requests.RequestException as exc:
            raise self._failure("WADO-RS from", exc) from exc

    def fetch_series(self, study_uid: str, series_uid: str, spool: Spool) -> list[tuple[str, str, bool]]:
        stored = []
        for dataset in self._iter_series(study_uid, series_uid):
            try:
                stored.append(spool.store_dataset(dataset))
            except RejectedObject as exc:
                raise TransportError(f"WADO-RS from {self.peer.name}: {exc} (kept as {exc.path.name})") from exc
        return stored

    def send(self, dataset: Dataset) -> None:
        try:
            answer = self.client.store_instances([dataset])
        except requests.RequestException as exc:
            raise self._failure("STOW-RS to", exc) from exc
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            raise TransportError(f"STOW-RS to {self.peer.name} failed: {failed[0].get('FailureReason')}")


def client_for(peer: Peer, local_ae: str) -> DimseClient | WebClient:
    return WebClient(peer) if peer.protocol == "dicomweb" else DimseClient(peer, local_ae, timeout=peer.timeout)
