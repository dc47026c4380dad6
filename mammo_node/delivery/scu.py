"""C-ECHO and C-STORE SCU: `mammo-node echo`, `mammo-node send` and the exporter.

Files are streamed from disk as stored (``STORE_SEND_CHUNKED_DATASET``), so presentation
contexts propose each file's own transfer syntax: nothing is decoded or re-encoded.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from mammo_node.errors import DeliveryError
from mammo_node.status import STORED_STATUSES
from mammo_node.tcp import association_without_delay

logger = logging.getLogger(__name__)

#: C-STORE statuses that mean "stored" although with a warning (coercion, elements discarded,
#: dataset does not match SOP class): delivered, and the warning is kept.
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    ae_title: str = "ANY-SCP"
    calling_ae: str = "MAMMO_NODE"
    ssl_context: ssl.SSLContext | None = None


@dataclass
class StoreOutcome:
    path: Path
    sop_instance_uid: str
    status: int | None  # None: no response (association lost)
    comment: str = ""
    # the request went out but no answer came back: the peer may have stored it
    may_have_arrived: bool = False

    @property
    def delivered(self) -> bool:
        return self.status in STORED_STATUSES


@dataclass
class SendReport:
    outcomes: list[StoreOutcome] = field(default_factory=list)
    rejected: str = ""  # association rejected: a configuration problem, not transient

    @property
    def delivered(self) -> int:
        return sum(o.delivered for o in self.outcomes)

    @property
    def failed(self) -> list[StoreOutcome]:
        return [o for o in self.outcomes if not o.delivered]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[addr]:port``)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f'Address "{text}" should be HOST:PORT.')
    return host.strip("[]"), int(port)


def _new_ae(calling_ae: str) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.maximum_pdu_size = 0
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.network_timeout = 120
    return ae


def open_association(ae: AE, peer: Peer) -> Association:
    """An association with ``peer``; once established, its socket sends without delay
    (``mammo_node.tcp``: no Nagle stall per C-STORE)."""
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=_tls(peer))
    if assoc.is_established:
        association_without_delay(assoc)
    return assoc


def echo(peer: Peer) -> int:
    """C-ECHO; returns the status (0 = success). Raises DeliveryError when no association."""
    ae = _new_ae(peer.calling_ae)
    ae.add_requested_context(Verification)
    assoc = open_association(ae, peer)
    if not assoc.is_established:
        raise DeliveryError(_why_not(assoc, peer))
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status:
        raise DeliveryError(f"no C-ECHO response from {peer.ae_title}@{peer.host}:{peer.port}")
    return int(status.Status)


def _tls(peer: Peer) -> tuple[ssl.SSLContext, str] | None:
    return (peer.ssl_context, peer.host) if peer.ssl_context else None


def _why_not(assoc: object, peer: Peer) -> str:
    where = f"{peer.ae_title}@{peer.host}:{peer.port}"
    if getattr(assoc, "is_rejected", False):
        rsp = assoc.acceptor.primitive  # type: ignore[attr-defined]
        return (
            f"association rejected by {where} (result {rsp.result_str}, source "
            f"{rsp.source_str}, reason {rsp.reason_str})"
        )
    try:  # pynetdicom reports a refused connection as an abort: tell them apart
        socket.create_connection((peer.host, peer.port), timeout=5).close()
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"association aborted by {where}"


def _contexts(metas: Sequence[tuple[str, str]]) -> list[PresentationContext]:
    """One context per (SOP class, transfer syntax) in the files, uncompressed fallbacks."""
    wanted: dict[tuple[str, str], None] = {}
    for sop_class, syntax in metas:
        wanted[(sop_class, syntax)] = None
    contexts = []
    for sop_class, syntax in wanted:
        syntaxes = [syntax]
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts.append(build_context(sop_class, syntaxes))
    if len(contexts) > MAX_CONTEXTS:
        raise DeliveryError(
            f"{len(contexts)} SOP class/transfer syntax pairs exceed the {MAX_CONTEXTS} "
            "presentation contexts of one association; send in smaller groups"
        )
    return contexts


def send_files(
    paths: Iterable[Path],
    peer: Peer,
    *,
    on_outcome: Callable[[StoreOutcome], None] | None = None,
) -> SendReport:
    """C-STORE every file over one association; returns each file's status. ``on_outcome``
    is called after each answer (the exporter commits each delivery at once)."""
    paths = list(paths)
    report = SendReport()
    if not paths:
        return report
    metas = []
    readable = []
    for path in paths:  # a missing or unreadable file fails its own row, not the batch
        try:
            meta = read_file_meta_info(path)
            metas.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
            readable.append(path)
        except Exception as exc:  # OSError, InvalidDicomError, a meta group without UIDs
            report.outcomes.append(
                StoreOutcome(path, "", None, f"cannot read the stored file: {type(exc).__name__}")
            )
    paths = readable
    if not paths:
        return report
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = _new_ae(peer.calling_ae)
    ae.requested_contexts = _contexts(metas)
    assoc = open_association(ae, peer)
    if not assoc.is_established:
        why = _why_not(assoc, peer)
        if assoc.is_rejected:
            report.rejected = why
            return report
        raise DeliveryError(why)
    try:
        accepted = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
        }
        for path, (sop_class, syntax) in zip(paths, metas, strict=True):
            sop_uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
            try:
                if (sop_class, syntax) in accepted:
                    status = assoc.send_c_store(path)  # streamed from disk as stored
                else:  # the peer took another uncompressed syntax: pynetdicom re-encodes
                    status = assoc.send_c_store(dcmread(path))
            except Exception as exc:  # contained per object: the others are still sent
                report.outcomes.append(
                    StoreOutcome(path, sop_uid, None, type(exc).__name__, may_have_arrived=True)
                )
                if not assoc.is_established:
                    break
                continue
            if not status:
                report.outcomes.append(
                    StoreOutcome(path, sop_uid, None, "no response", may_have_arrived=True)
                )
                break
            comment = str(status.get("ErrorComment", ""))
            outcome = StoreOutcome(path, sop_uid, int(status.Status), comment)
            report.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        if assoc.is_established:
            assoc.release()
    done = {o.path for o in report.outcomes}
    report.outcomes.extend(
        StoreOutcome(p, "", None, "not sent: association lost") for p in paths if p not in done
    )
    return report


@dataclass(frozen=True)
class HeldInstance:
    """Where an instance sits in the peer's hierarchy (a Study Root IMAGE-level query)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str


def instances_held(peer: Peer, wanted: Sequence[HeldInstance]) -> set[str] | None:
    """The SOP Instance UIDs of ``wanted`` that the peer already holds, asked with a Study
    Root C-FIND at IMAGE level over one association; ``None`` when the peer offers no query
    service (it refuses the association or the FIND context). The exporter asks this about
    objects that were in flight when a node process died, so a PACS that answered the C-STORE
    before the kill is not sent the same object twice."""
    if not wanted:
        return set()
    ae = _new_ae(peer.calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = open_association(ae, peer)
    if not assoc.is_established:
        return None
    held: set[str] = set()
    try:
        if not assoc.accepted_contexts:
            return None
        for item in wanted:
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = item.study_uid
            query.SeriesInstanceUID = item.series_uid
            query.SOPInstanceUID = item.sop_instance_uid
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                if not status:  # the association went: what is not confirmed is sent again
                    return held
                code = int(status.Status)
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    if str(identifier.get("SOPInstanceUID", "")) == item.sop_instance_uid:
                        held.add(item.sop_instance_uid)
                elif code != 0x0000:  # a failure answer: treat as not held
                    break
    finally:
        if assoc.is_established:
            assoc.release()
    return held


def send_parallel(paths: Sequence[Path], peer: Peer, associations: int) -> SendReport:
    """Split ``paths`` over ``associations`` concurrent associations."""
    groups = [list(paths[i::associations]) for i in range(max(1, associations))]
    merged = SendReport()
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for report in pool.map(lambda g: send_files(g, peer), groups):
            merged.outcomes.extend(report.outcomes)
            merged.rejected = merged.rejected or report.rejected
    return merged
