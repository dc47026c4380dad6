"""The Storage SCP: C-ECHO and C-STORE for every storage SOP class, with an allow-list,
a maximum number of associations, optional TLS and an audit row per association.

Every storage SOP class is accepted (a modality sends dose reports, presentation states and
key object notes with its images; a refused context makes it retry the study forever). Private
and newer-than-pynetdicom storage classes the requestor proposes are added to the association's
contexts when it is requested. Transfer syntaxes follow ``mammo_node.receive.syntaxes``.

Datasets are received straight to a temp file in the store's temp folder
(``STORE_RECV_CHUNKED_DATASET`` + ``dimse.receive``; PDU size unlimited), which ingest fsyncs
and renames into place: the payload is never decoded, copied or read back on this path.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any, cast

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import AE, _config, evt, register_uid
from pynetdicom.association import Association as PnAssociation
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from mammo_node.config import Settings
from mammo_node.db.models import Association, utcnow
from mammo_node.db.session import Database
from mammo_node.errors import (
    DatabaseError,
    InvalidInstanceError,
    MammoNodeError,
    StorageError,
)
from mammo_node.filing.ingest import Ingestor, IngestResult
from mammo_node.observe import audit
from mammo_node.receive import chunked as receive
from mammo_node.receive.guard import start_guarded_server
from mammo_node.receive.peers import AllowList
from mammo_node.receive.syntaxes import preferred_syntaxes
from mammo_node.sop_classes import STORAGE_SOP_CLASSES, is_storage_sop_class
from mammo_node.status import Status

logger = logging.getLogger(__name__)

# Never log identifiers (they carry patient data); our own log lines carry UIDs and AEs.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

#: how long ``stop`` waits for the threads of aborted associations to end
STOP_JOIN_SECONDS = 5.0


def build_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca is not None:
        context.load_verify_locations(settings.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def build_client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS for our outgoing associations: verify the peer against tls_ca (else system CAs);
    present our certificate when we have one (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_cert is not None and settings.tls_key is not None:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


class StorageSCP:
    """The node's DICOM listener. ``start()`` returns at once; ``stop()`` drains and closes:
    once it returns no association of this listener runs (nor logs)."""

    def __init__(self, settings: Settings, db: Database, ingestor: Ingestor) -> None:
        self.settings = settings
        self.db = db
        self.ingestor = ingestor
        self.allow_list = AllowList(settings.allowed_peers)
        self.server: ThreadedAssociationServer | None = None
        self._audit_ids: dict[int, int] = {}
        self._counts: dict[int, list[int]] = {}
        self._stored: dict[int, dict[str, list[str]]] = {}  # association -> study -> SOP UIDs
        self._storing: set[int] = set()  # associations with a C-STORE in, its answer not sent
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------
    def build_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = self.settings.max_pdu_size
        ae.maximum_associations = self.settings.max_associations
        ae.acse_timeout = self.settings.acse_timeout
        ae.dimse_timeout = self.settings.dimse_timeout
        ae.network_timeout = self.settings.network_timeout
        ae.require_called_aet = False  # checked in _on_requested, with the reason logged
        syntaxes = preferred_syntaxes()
        ae.add_supported_context(Verification, list(syntaxes))
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(syntaxes))
        return ae

    def start(self) -> ThreadedAssociationServer:
        _config.STORE_RECV_CHUNKED_DATASET = True
        receive.install(
            self.ingestor.store.tmp_dir,
            max_instance_bytes=self.settings.max_instance_bytes,
            min_free_bytes=self.settings.min_free_disk_mb * 2**20,
        )
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended, ["released"]),
            (evt.EVT_ABORTED, self._on_ended, ["aborted"]),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_DIMSE_RECV, self._on_message),
            (evt.EVT_PDU_SENT, self._on_pdu_sent),
        ]
        # the allow-list (by host) and PDU length limits apply before pynetdicom reads a PDU
        server = start_guarded_server(
            self.build_ae(),
            self.settings,
            evt_handlers=handlers,
            ssl_context=build_ssl_context(self.settings),
            on_refused=self._on_refused_connection,
        )
        self.server = server
        logger.info(
            "DICOM SCP %s listening on %s:%d (TLS %s, allow-list %s)",
            self.settings.ae_title,
            self.settings.host,
            self.port,
            "on" if self.settings.tls_cert else "off",
            "on" if self.allow_list.enabled else "off",
        )
        return server

    def open_associations(self) -> int:
        """Associations accepted and not yet ended (the scoring process gives way to them)."""
        with self._lock:
            return len(self._counts)

    @property
    def port(self) -> int:
        if self.server is None:
            return self.settings.port
        return int(self.server.server_address[1])

    def stop(self, drain: float | None = None) -> None:
        """Stop accepting; let C-STOREs in progress be filed and answered (up to ``drain``
        seconds, default ``dimse_timeout``), ending each association once it is idle; end
        the rest when the drain is over; then wait (``STOP_JOIN_SECONDS`` at most) for their
        threads, so that nothing of this listener runs, or logs, after ``stop`` returns."""
        if self.server is None:
            return
        server = self.server
        server.shutdown()  # no new associations; the listening socket is closed
        drain = self.settings.dimse_timeout if drain is None else drain
        deadline = time.monotonic() + drain
        associations: list[PnAssociation] = []
        while True:
            running = [a for a in server.active_associations if a.is_alive()]
            associations.extend(a for a in running if a not in associations)
            if not running or time.monotonic() >= deadline:
                break
            for assoc in running:
                self._end(assoc, busy_too=False)
            time.sleep(0.05)
        for assoc in running:
            if self._busy(assoc):
                logger.warning("association still receiving after %.0f s: aborted", drain)
            self._end(assoc, busy_too=True)
        join_by = time.monotonic() + STOP_JOIN_SECONDS
        for assoc in associations:
            assoc.join(max(0.0, join_by - time.monotonic()))
            assoc.dul.join(max(0.0, join_by - time.monotonic()))
        left = [a.name for a in associations if a.is_alive() or a.dul.is_alive()]
        if left:
            logger.warning("association thread(s) still running after stop: %s", left)
        self.server = None
        logger.info("DICOM SCP stopped")

    def _end(self, assoc: PnAssociation, *, busy_too: bool) -> None:
        """For ``stop``: abort ``assoc`` when established and idle (or ``busy_too``); hang up
        a connection that has not sent its A-ASSOCIATE-RQ; one negotiating or already ending
        is left to finish (the next look, or the join, sees it gone)."""
        if assoc.is_established:
            if busy_too or not self._busy(assoc):
                assoc.abort()  # idle: nothing received is left unanswered
        elif assoc.requestor.primitive is None:
            _hang_up(assoc)

    def _busy(self, assoc: PnAssociation) -> bool:
        """Whether ``assoc`` is receiving a message, or has a C-STORE in that is not yet
        filed and answered."""
        with self._lock:
            if id(assoc) in self._storing:
                return True
        dimse = assoc.dimse
        return dimse.message is not None or not dimse.msg_queue.empty()

    def _on_message(self, event: evt.Event) -> None:
        """A whole DIMSE message is in (DUL thread, before it is queued for the handler): a
        C-STORE keeps its association busy for ``stop`` until its answer is sent."""
        if isinstance(event.message, C_STORE_RQ):
            with self._lock:
                self._storing.add(id(event.assoc))

    def _on_pdu_sent(self, event: evt.Event) -> None:
        """After a C-STORE the SCP's next P-DATA is its answer, now on the wire."""
        if isinstance(event.pdu, P_DATA_TF):
            with self._lock:
                self._storing.discard(id(event.assoc))

    # --- associations ----------------------------------------------------------------
    def _on_refused_connection(self, host: str, port: int, reason: str) -> None:
        """A connection cut before its association request was read (receive.guard)."""
        self._audit("", self.settings.ae_title, host, port, accepted=False, reason=reason)

    def _on_requested(self, event: evt.Event) -> None:
        assoc: PnAssociation = event.assoc
        request = assoc.requestor.primitive
        assert request is not None  # EVT_REQUESTED fires once the A-ASSOCIATE-RQ is in
        calling = request.calling_ae_title.strip()
        called = request.called_ae_title.strip()
        host = assoc.requestor.address
        reason = None
        reject = (0x01, 0x01, 0x01)
        if self.settings.require_called_ae and called != self.settings.ae_title:
            reason = f"called AE {called!r} is not this node ({self.settings.ae_title!r})"
            reject = (0x01, 0x01, 0x07)
        elif (refusal := self.allow_list.check(calling, host)) is not None:
            reason = refusal
            reject = (0x01, 0x01, 0x03)
        else:
            try:
                self.ingestor.check_space()
            except StorageError as exc:
                reason = f"storage full: {exc}"
                reject = (0x02, 0x03, 0x01)  # transient: temporary congestion
        if reason is None:
            _support_proposed_storage(assoc)
            return
        logger.warning("rejecting association from %s@%s: %s", calling, host, reason)
        self._audit(calling, called, host, assoc.requestor.port, accepted=False, reason=reason)
        assoc.acse.send_reject(*reject)
        assoc.kill()

    def _on_accepted(self, event: evt.Event) -> None:
        assoc: PnAssociation = event.assoc
        calling = assoc.requestor.ae_title.strip()
        host = assoc.requestor.address
        audit_id = self._audit(
            calling, self.settings.ae_title, host, assoc.requestor.port, accepted=True
        )
        with self._lock:
            self._counts[id(assoc)] = [0, 0]
            self._stored[id(assoc)] = {}
            if audit_id is not None:
                self._audit_ids[id(assoc)] = audit_id
        logger.info("association from %s@%s accepted", calling, host)

    def _on_ended(self, event: evt.Event, how: str) -> None:
        key = id(event.assoc)
        with self._lock:
            audit_id = self._audit_ids.pop(key, None)
            stored, failed = self._counts.pop(key, [0, 0])
            studies = self._stored.pop(key, {})
            self._storing.discard(key)
        if audit_id is None:
            return
        try:
            with self.db.session() as session:
                row = session.get(Association, audit_id)
                if row is not None:
                    row.ended_at = utcnow()
                    row.end_reason = how
                    row.stored = stored
                    row.failed = failed
                    for study_uid, sop_uids in studies.items():
                        audit.record_in(
                            session,
                            row.calling_ae,
                            audit.RECEIVED,
                            study_uid,
                            source="dimse",
                            peer=row.peer_host,
                            sop_instance_uids=sop_uids,
                        )
        except DatabaseError:
            logger.exception("could not close the audit row of association %d", audit_id)
        logger.info("association %s: %d stored, %d failed", how, stored, failed)

    def _audit(
        self, calling: str, called: str, host: str, port: int, *, accepted: bool, reason: str = ""
    ) -> int | None:
        try:
            with self.db.session() as session:
                row = Association(
                    calling_ae=calling[:16],
                    called_ae=called[:16],
                    peer_host=host,
                    peer_port=port,
                    tls=self.settings.tls_cert is not None,
                    accepted=accepted,
                    reject_reason=reason,
                )
                session.add(row)
                session.flush()
                return row.id
        except DatabaseError:
            logger.exception("could not write the association audit row")
            return None

    def _count(self, event: evt.Event, ok: bool, result: IngestResult | None = None) -> None:
        with self._lock:
            counts = self._counts.get(id(event.assoc))
            if counts is not None:
                counts[0 if ok else 1] += 1
            studies = self._stored.get(id(event.assoc))
            if studies is not None and result is not None:
                studies.setdefault(result.study_uid, []).append(result.sop_instance_uid)

    # --- DIMSE -----------------------------------------------------------------------
    def _on_echo(self, event: evt.Event) -> int:
        return Status.SUCCESS

    def _on_store(self, event: evt.Event) -> int | Dataset:
        """Persist and index; never raise (the status says what went wrong)."""
        assoc = event.assoc
        request = cast(C_STORE, event.request)
        calling = assoc.requestor.ae_title.strip()
        host = assoc.requestor.address
        try:
            self.ingestor.check_space()
            result = self.ingestor.ingest_file(
                event.dataset_path,
                source="dimse",
                calling_ae=calling,
                peer_host=host,
                expected_sop_class=str(request.AffectedSOPClassUID),
                expected_sop_instance=str(request.AffectedSOPInstanceUID),
            )
        except InvalidInstanceError as exc:
            logger.warning(
                "refused %s from %s@%s: %s", request.AffectedSOPInstanceUID, calling, host, exc
            )
            self._count(event, ok=False)
            return _status(exc.status, str(exc))
        except (StorageError, DatabaseError) as exc:
            logger.exception("cannot store %s from %s", request.AffectedSOPInstanceUID, calling)
            self._count(event, ok=False)
            return _status(Status.OUT_OF_RESOURCES, f"out of resources: {type(exc).__name__}")
        except MammoNodeError as exc:
            logger.exception("cannot store %s", request.AffectedSOPInstanceUID)
            self._count(event, ok=False)
            return _status(Status.HANDLER_ERROR, str(exc))
        except Exception:
            logger.exception("unexpected error storing %s", request.AffectedSOPInstanceUID)
            self._count(event, ok=False)
            return _status(Status.HANDLER_ERROR, "internal error; see the node's log")
        self._count(event, ok=True, result=result)
        return Status.SUCCESS


def _hang_up(assoc: PnAssociation) -> None:
    """Close a connection whose A-ASSOCIATE-RQ has not come: pynetdicom's acceptor waits for
    it up to ``acse_timeout`` and an A-ABORT is not valid before it (state Sta2). Closing the
    transport takes the state machine back to Sta1 (Evt17); an empty item wakes the acceptor,
    which then ends as on a timeout."""
    sock = assoc.dul.socket
    if sock is not None:
        sock.close()
    assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


# Private / newer storage SOP classes registered with pynetdicom so far (bounded: the names
# come from the network).
_REGISTERED: set[str] = set()
_MAX_REGISTERED = 2000
_REGISTER_LOCK = threading.Lock()


def _support_proposed_storage(assoc: PnAssociation) -> None:
    """Add a context, with our transfer syntaxes, for each proposed storage SOP class that
    pynetdicom does not know (a vendor's private class, a class newer than the library), and
    register it with the Storage service so its C-STOREs reach ``_on_store``."""
    request = assoc.requestor.primitive
    proposed = request.presentation_context_definition_list if request else []
    supported = assoc.acceptor.supported_contexts
    known = {str(cx.abstract_syntax) for cx in supported}
    added: list[PresentationContext] = []
    for context in proposed:
        uid = str(context.abstract_syntax)
        if uid in known or not is_storage_sop_class(uid):
            continue
        with _REGISTER_LOCK:
            if uid not in _REGISTERED:
                if len(_REGISTERED) >= _MAX_REGISTERED:
                    logger.warning("not accepting SOP class %s: too many private classes", uid)
                    continue
                register_uid(uid, "NodeStorage_" + uid.replace(".", "_"), StorageServiceClass)
                _REGISTERED.add(uid)
        cx = PresentationContext()
        cx.abstract_syntax = UID(uid)
        cx.transfer_syntax = list(preferred_syntaxes())
        added.append(cx)
        known.add(uid)
    if added:
        assoc.acceptor.supported_contexts = [*supported, *added]
        logger.info("accepting %d private or unlisted storage SOP class(es)", len(added))
