"""DICOMweb (PS3.18): STOW-RS, QIDO-RS and WADO-RS under ``/dicomweb``.

STOW-RS files every part through the one ingest path (``Ingestor.ingest_file``) and answers the
Store Instances Response dataset: 200 all stored, 202 some failed, 409 none stored, each failure
with its Failure Reason and a Warning header saying why. WADO-RS streams stored files from
disk as multipart/related; metadata is DICOM JSON with BulkDataURIs; rendered frames are PNG or
JPEG through the DICOM greyscale pipeline. Reads need role read, STOW-RS role admin.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from sqlalchemy import select

from mammo_node.config import Settings
from mammo_node.db.models import Exam, Instance, Series
from mammo_node.errors import (
    DatabaseError,
    InvalidInstanceError,
    PixelDataError,
    StorageError,
)
from mammo_node.filing.ingest import read_header
from mammo_node.filing.storage import validate_uid
from mammo_node.limits import ImageLimits, decoded_size
from mammo_node.observe import audit, metrics
from mammo_node.sandbox import Sandbox
from mammo_node.scrub import scrub
from mammo_node.sop_classes import is_storage_sop_class
from mammo_node.status import Status
from mammo_node.web import render
from mammo_node.web.decoding import (
    check_file,
    decoded_frame,
    in_sandbox,
    render_file,
    transcoded,
    web_decoder,
)
from mammo_node.web.deps import (
    WebContext,
    actor,
    client_host,
    context,
    public_base,
    require_admin,
    require_read,
)
from mammo_node.web.dicomjson import PIXEL_DATA, with_base
from mammo_node.web.errors import DicomWebError, warning_header
from mammo_node.web.media import (
    DICOM,
    DICOM_JSON,
    EXPLICIT_VR_LE,
    MULTIPART_RELATED,
    MultipartReceiver,
    Part,
    ReceivedPart,
    choose_media,
    dicom_acceptance,
    multipart_response,
    parse_media_type,
)
from mammo_node.web.qido import INSTANCE, SERIES, STUDY, parse_query

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/dicomweb")

JSON_TYPES = [DICOM_JSON, "application/json"]


def base_url(request: Request) -> str:
    return public_base(request) + "/dicomweb"


def _uid(value: str, name: str) -> str:
    try:
        return validate_uid(value, name)
    except InvalidInstanceError as exc:
        raise DicomWebError(400, str(exc)) from exc


def json_response(
    payload: Any,
    media_type: str = DICOM_JSON,
    status: int = 200,
    warnings: list[str] | None = None,
) -> Response:
    headers = {"Warning": ", ".join(warning_header(w) for w in warnings)} if warnings else None
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type=media_type, headers=headers)


# --- STOW-RS ----------------------------------------------------------------------------------
@dataclass
class PartOutcome:
    sop_class: str
    sop_instance: str
    study_uid: str
    series_uid: str
    failure: int | None = None
    reason: str = ""


@router.post("/studies")
async def store_instances(request: Request) -> Response:
    return await _store(request, None)


@router.post("/studies/{study}")
async def store_study_instances(request: Request, study: str) -> Response:
    return await _store(request, _uid(study, "StudyInstanceUID in the URL"))


async def _store(request: Request, study_uid: str | None) -> Response:
    principal = require_admin(request)
    ctx = context(request)
    media = choose_media(request.headers.get("accept"), JSON_TYPES)
    content_type = parse_media_type(request.headers.get("content-type", ""))
    if content_type.type != MULTIPART_RELATED:
        raise DicomWebError(
            415,
            f"Content-Type {content_type.type or 'absent'!r}: STOW-RS takes "
            'multipart/related; type="application/dicom"',
        )
    part_type = content_type.params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise DicomWebError(
            415,
            f"multipart/related type={part_type!r}: only application/dicom parts are taken "
            "(no DICOM JSON / XML metadata with bulk data)",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > ctx.max_stow_bytes:
        raise DicomWebError(
            413, f"request of {int(declared)} bytes exceeds the limit of {ctx.max_stow_bytes}"
        )
    try:
        ctx.ingestor.check_space()
    except StorageError as exc:
        raise DicomWebError(503, f"not accepting instances: {exc}", {"Retry-After": "60"}) from exc
    boundary = content_type.params.get("boundary", "")
    slots = ctx.stow_slots
    if slots is not None and not slots.acquire(blocking=False):
        raise DicomWebError(
            503,
            f"{ctx.settings.max_stow_concurrency} STOW-RS requests are being filed; try again",
            {"Retry-After": "5"},
        )
    receiver = MultipartReceiver(
        boundary,
        ctx.ingestor.store.temp_path,
        max_parts=ctx.settings.max_stow_parts,
        max_part_bytes=ctx.settings.max_instance_bytes,
    )
    try:
        with ctx.receiving.upload():  # the scoring process gives way, as to an association
            parts = await _receive(request, receiver, ctx.max_stow_bytes, ctx.settings)
            who, host = principal.name, client_host(request)
            outcomes = await anyio.to_thread.run_sync(
                lambda: [_file_part(ctx, part, study_uid, who, host) for part in parts]
            )
    finally:
        receiver.cleanup()
        if slots is not None:
            slots.release()
    return _store_answer(request, ctx, outcomes, study_uid, media)


#: a STOW-RS body is held to the minimum rate only after this many seconds
STOW_RATE_GRACE_SECONDS = 30.0


async def _receive(
    request: Request, receiver: MultipartReceiver, limit: int, settings: Settings
) -> list[ReceivedPart]:
    """The body into temp files, bounded in size, parts, silence and rate: a client that
    trickles its body cannot hold one of the few STOW-RS slots for ever."""
    total = 0
    started = time.monotonic()
    chunks = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(settings.stow_body_idle_timeout):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise DicomWebError(
                408, f"the request body sent nothing for {settings.stow_body_idle_timeout:g} s"
            ) from None
        total += len(chunk)
        if total > limit:
            raise DicomWebError(413, f"request body exceeds the limit of {limit} bytes")
        elapsed = time.monotonic() - started
        floor = settings.stow_min_bytes_per_second
        if floor and elapsed > STOW_RATE_GRACE_SECONDS and total < floor * elapsed:
            raise DicomWebError(
                408, f"the request body arrives slower than {floor} bytes/s: dropped"
            )
        receiver.feed(chunk)
    parts = receiver.finish()
    if not parts:
        raise DicomWebError(400, "the multipart/related body holds no parts")
    for part in parts:
        part_media = parse_media_type(part.content_type).type if part.content_type else DICOM
        if part_media != DICOM:
            raise DicomWebError(
                415, f"a part has Content-Type {part_media!r}; every part must be application/dicom"
            )
    return parts


def as_part10(path: Path) -> None:
    """Give a part that starts straight with its File Meta group the 128-byte preamble and
    "DICM" prefix of a Part-10 file (pydicom's ``dcmwrite`` - used by dicomweb-client - writes
    datasets built in memory that way); the dataset bytes themselves are kept as received."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or head[:2] != b"\x02\x00":
        return
    fixed = path.with_name(path.name + ".p10")
    with path.open("rb") as source, fixed.open("wb") as target:
        target.write(b"\x00" * 128 + b"DICM")
        shutil.copyfileobj(source, target, 1024 * 1024)
    os.replace(fixed, path)


def _file_part(
    ctx: WebContext, part: ReceivedPart, study_uid: str | None, who: str, host: str
) -> PartOutcome:
    """Check one part against the request, then file it through the ingest path."""
    try:
        as_part10(part.path)
        ds = read_header(part.path, ImageLimits.from_settings(ctx.settings))
    except InvalidInstanceError as exc:
        metrics.instance_rejected("stow", "invalid")
        return PartOutcome("", "", "", "", exc.status or Status.CANNOT_UNDERSTAND, str(exc))
    outcome = PartOutcome(
        str(ds.get("SOPClassUID", "")),
        str(ds.get("SOPInstanceUID", "")),
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
    )
    if not is_storage_sop_class(outcome.sop_class):
        metrics.instance_rejected("stow", "sop_class")
        outcome.failure, outcome.reason = (
            Status.SOP_CLASS_NOT_SUPPORTED,
            (f"SOP class {outcome.sop_class or 'absent'} is not a storage SOP class"),
        )
        return outcome
    if study_uid and outcome.study_uid != study_uid:
        metrics.instance_rejected("stow", "study_mismatch")
        outcome.failure, outcome.reason = (
            Status.PROCESSING_FAILURE,
            (
                f"instance {outcome.sop_instance} belongs to study {outcome.study_uid}, "
                f"not to {study_uid} named in the URL"
            ),
        )
        return outcome
    try:
        ctx.ingestor.ingest_file(part.path, source="stow", calling_ae=who[:16], peer_host=host)
    except InvalidInstanceError as exc:
        outcome.failure, outcome.reason = exc.status, scrub(str(exc))
    except StorageError as exc:
        outcome.failure, outcome.reason = Status.OUT_OF_RESOURCES, scrub(str(exc))
    except DatabaseError as exc:
        logger.exception("STOW-RS: indexing %s failed", outcome.sop_instance)
        outcome.failure, outcome.reason = Status.PROCESSING_FAILURE, scrub(f"{exc}", 300)
    return outcome


def _store_answer(
    request: Request,
    ctx: WebContext,
    outcomes: list[PartOutcome],
    study_uid: str | None,
    media: str,
) -> Response:
    base = base_url(request)
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    answer: dict[str, Any] = {}
    studies = {o.study_uid for o in stored}
    if study_uid or len(studies) == 1:
        answer["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study_uid or studies.pop()}"]}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": [_failed_item(o) for o in failed]}
    if stored:
        answer["00081199"] = {"vr": "SQ", "Value": [_stored_item(o, base) for o in stored]}
    who = actor(request)
    for study in sorted({o.study_uid for o in stored}):
        ctx.audit.record_now(
            who,
            audit.RECEIVED,
            study,
            source="stow",
            peer=client_host(request),
            sop_instance_uids=[o.sop_instance for o in stored if o.study_uid == study],
        )
    if failed:
        ctx.audit.record_now(
            who,
            audit.STOW_FAILED,
            study_uid or "",
            peer=client_host(request),
            failures=[
                {"sop_instance_uid": o.sop_instance, "reason": f"0x{o.failure:04X}"}
                for o in failed
                if o.failure is not None
            ],
        )
    status = 200 if not failed else 202 if stored else 409
    reasons = [f"{o.sop_instance or 'unreadable part'}: {o.reason}" for o in failed]
    return json_response(answer, media, status, reasons[:20])


def _failed_item(outcome: PartOutcome) -> dict[str, Any]:
    return {
        "00081150": {"vr": "UI", "Value": [outcome.sop_class]}
        if outcome.sop_class
        else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [outcome.sop_instance]}
        if outcome.sop_instance
        else {"vr": "UI"},
        "00081197": {"vr": "US", "Value": [outcome.failure]},
    }


def _stored_item(outcome: PartOutcome, base: str) -> dict[str, Any]:
    url = (
        f"{base}/studies/{outcome.study_uid}/series/{outcome.series_uid}"
        f"/instances/{outcome.sop_instance}"
    )
    return {
        "00081150": {"vr": "UI", "Value": [outcome.sop_class]},
        "00081155": {"vr": "UI", "Value": [outcome.sop_instance]},
        "00081190": {"vr": "UR", "Value": [url]},
    }


# --- QIDO-RS ----------------------------------------------------------------------------------
def _search(
    request: Request, level: str, study: str | None = None, series: str | None = None
) -> Response:
    require_read(request)
    ctx = context(request)
    media = choose_media(request.headers.get("accept"), JSON_TYPES)
    study_uid = _uid(study, "StudyInstanceUID in the URL") if study else None
    series_uid = _uid(series, "SeriesInstanceUID in the URL") if series else None
    query = parse_query(list(request.query_params.multi_items()), level, study_uid, series_uid)
    with ctx.db.read() as session:
        result = ctx.searcher.search(session, query, base_url(request))
    ctx.audit.record(
        actor(request),
        audit.SEARCHED,
        study_uid or "",
        level=level,
        keys=sorted({a.keyword for a, _ in query.matches}),
        results=len(result.datasets),
    )
    return json_response(result.datasets, media, warnings=result.warnings)


@router.get("/studies")
def search_studies(request: Request) -> Response:
    return _search(request, STUDY)


@router.get("/series")
def search_all_series(request: Request) -> Response:
    return _search(request, SERIES)


@router.get("/instances")
def search_all_instances(request: Request) -> Response:
    return _search(request, INSTANCE)


@router.get("/studies/{study}/series")
def search_series(request: Request, study: str) -> Response:
    return _search(request, SERIES, study)


@router.get("/studies/{study}/instances")
def search_study_instances(request: Request, study: str) -> Response:
    return _search(request, INSTANCE, study)


@router.get("/studies/{study}/series/{series}/instances")
def search_series_instances(request: Request, study: str, series: str) -> Response:
    return _search(request, INSTANCE, study, series)


# --- WADO-RS ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    study_uid: str
    series_uid: str
    sop_uid: str
    rel_path: str
    transfer_syntax: str


def _stored(ctx: WebContext, study: str, series: str | None, sop: str | None) -> list[Stored]:
    study_uid = _uid(study, "StudyInstanceUID in the URL")
    query = (
        select(
            Exam.study_uid,
            Series.series_uid,
            Instance.sop_instance_uid,
            Instance.rel_path,
            Instance.transfer_syntax_uid,
            Instance.pruned_at,
        )
        .join(Series, Instance.series_fk == Series.id)
        .join(Exam, Instance.exam_fk == Exam.id)
        .where(Exam.study_uid == study_uid)
    )
    if series is not None:
        query = query.where(Series.series_uid == _uid(series, "SeriesInstanceUID in the URL"))
    if sop is not None:
        query = query.where(Instance.sop_instance_uid == _uid(sop, "SOPInstanceUID in the URL"))
    with ctx.db.read() as session:
        rows = session.execute(
            query.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
        ).all()
    if not rows:
        what = f"instance {sop}" if sop else f"series {series}" if series else "study"
        raise DicomWebError(404, f"no {what} in study {study_uid} on this node")
    on_file = [Stored(*row[:5]) for row in rows if row.pruned_at is None]
    if not on_file:
        when = max(row.pruned_at for row in rows).date().isoformat()
        raise DicomWebError(
            410,
            f"the files of this {'instance' if sop else 'series' if series else 'study'} were "
            f"deleted by retention on {when}; the node keeps the exam's record and result",
        )
    return on_file


def _retrieve(
    request: Request, study: str, series: str | None = None, sop: str | None = None
) -> Response:
    require_read(request)
    ctx = context(request)
    acceptance = dicom_acceptance(request.headers.get("accept"))
    items = _stored(ctx, study, series, sop)
    parts = []
    for item in items:
        syntax = acceptance.choose(item.transfer_syntax)
        if syntax is None:
            raise DicomWebError(
                406,
                f"instance {item.sop_uid} is stored in {item.transfer_syntax}; the node sends "
                f"it as stored or as Explicit VR Little Endian ({EXPLICIT_VR_LE}), and the Accept "
                "header allows neither",
            )
        path = ctx.ingestor.store.path(item.rel_path)
        location = (
            f"{base_url(request)}/studies/{item.study_uid}/series/{item.series_uid}"
            f"/instances/{item.sop_uid}"
        )
        content_type = f"{DICOM}; transfer-syntax={syntax}"
        if syntax == item.transfer_syntax:
            parts.append(Part(content_type, path=path, location=location))
        else:
            check_file(path, _limits(ctx), frames=None)  # before a byte of the answer
            parts.append(Part(content_type, produce=_transcoder(ctx, path), location=location))
    ctx.audit.record(
        actor(request),
        audit.RETRIEVED,
        items[0].study_uid,
        level="instance" if sop else "series" if series else "study",
        instances=len(items),
    )
    return multipart_response(parts, DICOM)


def _limits(ctx: WebContext) -> ImageLimits:
    return ImageLimits.from_settings(ctx.settings)


def _decoder(ctx: WebContext) -> Sandbox:
    if ctx.decoder is None:
        ctx.decoder = web_decoder(ctx.settings)
    return ctx.decoder


def _transcoder(ctx: WebContext, path: Path) -> Any:
    def produce() -> bytes:
        return bytes(in_sandbox(_decoder(ctx), transcoded, path))

    return produce


@router.get("/studies/{study}")
def retrieve_study(request: Request, study: str) -> Response:
    return _retrieve(request, study)


@router.get("/studies/{study}/series/{series}")
def retrieve_series(request: Request, study: str, series: str) -> Response:
    return _retrieve(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}")
def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return _retrieve(request, study, series, sop)


def _metadata(
    request: Request, study: str, series: str | None = None, sop: str | None = None
) -> Response:
    require_read(request)
    ctx = context(request)
    media = choose_media(request.headers.get("accept"), JSON_TYPES)
    items = _stored(ctx, study, series, sop)
    base = base_url(request)
    datasets = []
    for item in items:
        url = f"{base}/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"
        datasets.append(with_base(ctx.headers.get(item.rel_path), url))
    ctx.audit.record(
        actor(request), audit.RETRIEVED, items[0].study_uid, level="metadata", instances=len(items)
    )
    return json_response(datasets, media)


@router.get("/studies/{study}/metadata")
def study_metadata(request: Request, study: str) -> Response:
    return _metadata(request, study)


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(request: Request, study: str, series: str) -> Response:
    return _metadata(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata")
def instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
    return _metadata(request, study, series, sop)


# --- rendered, frames, bulk data --------------------------------------------------------------
def _render(request: Request, study: str, series: str, sop: str, frame: int) -> Response:
    require_read(request)
    ctx = context(request)
    media = choose_media(request.headers.get("accept"), ["image/jpeg", "image/png"])
    params = request.query_params
    try:
        window = render.parse_window(params.get("window"))
        viewport = render.parse_viewport(params.get("viewport"))
        quality = int(params.get("quality", "90"))
        if not 1 <= quality <= 100:
            raise ValueError(f"quality={quality}: expected 1..100")
    except ValueError as exc:
        raise DicomWebError(400, str(exc)) from exc
    item = _stored(ctx, study, series, sop)[0]
    try:
        data = render_file(
            _decoder(ctx),
            _limits(ctx),
            ctx.ingestor.store.path(item.rel_path),
            media,
            frame=frame,
            window=window,
            viewport=viewport,
            quality=quality,
        )
    except PixelDataError as exc:
        raise DicomWebError(406, f"instance {sop} cannot be rendered as an image: {exc}") from exc
    ctx.audit.record(
        actor(request),
        audit.RETRIEVED,
        item.study_uid,
        level="rendered",
        sop_instance_uid=item.sop_uid,
    )
    return Response(data, media_type=media)


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered")
def instance_rendered(request: Request, study: str, series: str, sop: str) -> Response:
    return _render(request, study, series, sop, 1)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered")
def frame_rendered(request: Request, study: str, series: str, sop: str, frame: str) -> Response:
    numbers = _frame_numbers(frame)
    if len(numbers) != 1:
        raise DicomWebError(400, "rendered frames take one frame number")
    return _render(request, study, series, sop, numbers[0])


def _frame_numbers(text: str) -> list[int]:
    """Frame numbers of a WADO-RS frame list, each once, in the order first asked."""
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise DicomWebError(400, "frame list: expected numbers such as 1,2,3") from None
    if not numbers or min(numbers) < 1:
        raise DicomWebError(400, "frame list: frame numbers start at 1")
    return list(dict.fromkeys(numbers))


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}")
def retrieve_frames(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    require_read(request)
    ctx = context(request)
    choose_media(request.headers.get("accept"), ["multipart/related"])
    numbers = _frame_numbers(frames)
    item = _stored(ctx, study, series, sop)[0]
    parts, size = _frame_parts(ctx, ctx.ingestor.store.path(item.rel_path), numbers)
    return multipart_response(parts, "application/octet-stream", expected_bytes=size)


def _frame_parts(ctx: WebContext, path: Path, numbers: list[int]) -> tuple[list[Part], int]:
    """One part per frame, produced while the answer streams (never all frames in memory):
    sliced from the file when native, decoded one frame at a time in the sandbox otherwise.
    Returns the parts and the bytes they will hold."""
    ds = dcmread(path, defer_size=1024)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bad = [n for n in numbers if n > frames]
    if bad:
        raise DicomWebError(404, f"frame(s) {bad[:10]} requested; the instance has {frames}")
    if "PixelData" not in ds:
        raise DicomWebError(404, "the instance has no pixel data")
    limits = _limits(ctx)
    check_file(path, limits, frames=1)
    size = decoded_size(ds).frame_bytes
    content_type = f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        decoder = _decoder(ctx)
        return [
            Part(content_type, produce=partial(in_sandbox, decoder, decoded_frame, path, n))
            for n in numbers
        ], size * len(numbers)
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if isinstance(raw, RawDataElement) and raw.value is None:
        start = raw.value_tell
        return [
            Part(content_type, produce=partial(_read_at, path, start + (n - 1) * size, size))
            for n in numbers
        ], size * len(numbers)
    data = ds.PixelData
    return [
        Part(content_type, produce=partial(_slice, data, (n - 1) * size, size)) for n in numbers
    ], size * len(numbers)


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def _slice(data: bytes, offset: int, size: int) -> bytes:
    return data[offset : offset + size]


def _native_frames(ctx: WebContext, path: Path, numbers: list[int]) -> list[bytes]:
    parts, _ = _frame_parts(ctx, path, numbers)
    return [p.produce() for p in parts if p.produce is not None]


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{tag}")
def retrieve_bulk(request: Request, study: str, series: str, sop: str, tag: str) -> Response:
    """A top-level bulk data element (BulkDataURI of the metadata) as application/octet-stream."""
    require_read(request)
    ctx = context(request)
    try:
        number = int(tag, 16)
    except ValueError:
        raise DicomWebError(400, f"bulk data tag {tag!r}: expected 8 hex digits") from None
    item = _stored(ctx, study, series, sop)[0]
    path = ctx.ingestor.store.path(item.rel_path)
    if number == PIXEL_DATA:
        ds = dcmread(path, stop_before_pixels=True)
        check_file(path, _limits(ctx), frames=None)  # all frames in one answer: bounded
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        data = b"".join(_native_frames(ctx, path, list(range(1, frames + 1))))
    else:
        ds = dcmread(path, stop_before_pixels=True)
        if number not in ds:
            raise DicomWebError(404, f"instance {sop} has no element {tag.upper()}")
        value = ds[number].value
        data = value if isinstance(value, bytes) else bytes(value or b"")
    return multipart_response(
        [Part("application/octet-stream", produce=lambda: data)], "application/octet-stream"
    )
