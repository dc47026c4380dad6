"""One scored exam -> the DICOM objects that go back into the source study.

Pure: pydicom Datasets in, pydicom Datasets out; no database, network or files. The worker
stores the datasets and queues them for export; ``OutputKind.SR`` is the primary result
(``sr_sop_instance_uid``). See :mod:`mammo_node.writers.sr` for why there is one report per
view besides the exam report.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from pydicom import Dataset
from pydicom.uid import (
    ComprehensiveSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    MammographyCADSRStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)

from mammo_node.domain import ExamInference, Slot
from mammo_node.errors import OutputError
from mammo_node.writers import codes
from mammo_node.writers.cad_sr import build_cad_report
from mammo_node.writers.gsps import build_presentation_state
from mammo_node.writers.identity import (
    OutputIdentity,
    OutputKind,
    ReferencedDocument,
    bundle_key,
    cad_identity,
    plan_identities,
    tracking_uid,
)
from mammo_node.writers.iocm import build_rejection_note
from mammo_node.writers.sc import DEFAULT_MAX_PIXELS, build_secondary_capture
from mammo_node.writers.seg import DEFAULT_TOP_FRACTION, build_segmentation
from mammo_node.writers.sources import ScoredView, copy_identity, scored_views
from mammo_node.writers.sr import ReportContext, build_exam_report, build_view_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputObject:
    """One object to store and send: what it is, for which view, and the dataset itself."""

    kind: OutputKind
    slot: Slot | None
    dataset: Dataset
    operating_point: str | None = None  # CAD SR: the operating point its rendering intents use

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)


def sop_classes_for_outputs() -> list[str]:
    """The SOP classes :func:`build_outputs` produces (for the exporter's presentation contexts).

    Every output is encoded Explicit VR Little Endian.
    """
    return [
        ComprehensiveSRStorage,
        SecondaryCaptureImageStorage,
        SegmentationStorage,
        MammographyCADSRStorage,
        GrayscaleSoftcopyPresentationStateStorage,
        KeyObjectSelectionDocumentStorage,
    ]


def _cad_reports(
    inference: ExamInference,
    revision: int,
    plan: Mapping[tuple[OutputKind, Slot | None], OutputIdentity],
    names: Sequence[str | None],
) -> list[tuple[str | None, OutputIdentity]]:
    """(operating point, identity) of each CAD SR: the bundle's first point uses the planned
    identity (the one the other reports reference), another point one of its own."""
    points = inference.bundle.operating_points
    default = points[0].name if points else None
    wanted: list[str | None] = []
    for name in names or (None,):
        name = name or default
        if name not in wanted:
            wanted.append(name)
    return [
        (
            name,
            plan[OutputKind.CAD_SR, None]
            if name == default
            else cad_identity(inference.study_uid, inference.bundle, revision, str(name)),
        )
        for name in wanted
    ]


def build_outputs(
    sources: Mapping[Slot, Dataset],
    inference: ExamInference,
    *,
    revision: int,
    previous_sr: Sequence[ReferencedDocument] = (),
    institution_name: str | None = None,
    station_name: str | None = None,
    now: datetime.datetime | None = None,
    sc_max_pixels: int = DEFAULT_MAX_PIXELS,
    seg_top_fraction: float = DEFAULT_TOP_FRACTION,
    cad_operating_points: Sequence[str | None] = (None,),
    withdrawn: Sequence[ReferencedDocument] = (),
    threads: int = 1,
) -> list[OutputObject]:
    """Exam report SR, then per view: report SR, Secondary Capture, Segmentation; then the
    Mammography CAD SR and the presentation state of the exam.

    ``cad_operating_points`` name the bundle operating points above which CAD marks are
    "Presentation Required", one CAD SR each (None: the bundle's first); ``withdrawn`` are the
    SC / SEG / GSPS of the result this one replaces: a rejection note (KOS) for them comes last.

    ``sources`` are the scored For Presentation images (pixels included) by view;
    ``revision`` numbers the exam's results (a re-run gets a new one, hence new UIDs);
    ``previous_sr`` are the SRs of the result this one replaces (Predecessor Documents).
    With ``threads`` >= 2 the pixel objects (SC, SEG: numpy, which releases the GIL) are built
    in a second thread while this one builds the documents (highdicom's SR, CAD SR and GSPS
    constructors: Python that holds it); the objects and their order are the same either way.
    Raises :class:`~mammo_node.errors.OutputError` when inputs do not fit together.
    """
    if revision < 0:
        raise OutputError(f'Argument "revision" should be >= 0, got {revision!r}.')
    if threads < 1:
        raise OutputError(f'Argument "threads" should be >= 1, got {threads!r}.')
    codes.check_score_kind(inference.bundle)
    views = scored_views(sources, inference)
    now = now or datetime.datetime.now()
    plan = plan_identities(
        inference.study_uid,
        inference.bundle,
        revision,
        [v.slot for v in views],
        rejection=bool(withdrawn),
    )
    ctx = ReportContext(
        inference=inference,
        revision=revision,
        previous=tuple(previous_sr),
        plan=plan,
        institution_name=institution_name,
        station_name=station_name,
        now=now,
    )
    started = time.perf_counter()

    pixel_objects = partial(
        _pixel_objects, views, ctx, sc_max_pixels=sc_max_pixels, seg_top_fraction=seg_top_fraction
    )
    documents = partial(_documents, views, ctx, cad_operating_points, withdrawn)
    try:
        if threads >= 2:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="writers-pixels") as pool:
                pending = pool.submit(pixel_objects)
                reports, rest = documents()
                images = pending.result()
        else:
            images = pixel_objects()
            reports, rest = documents()
        outputs = reports + images + rest
        by_slot = {v.slot: v.header for v in views}
        for out in outputs:
            source = by_slot.get(out.slot) if out.slot else views[0].header
            copy_identity(
                out.dataset, source or views[0].header, is_sr=out.dataset.Modality == "SR"
            )
    except (ValueError, TypeError, AttributeError) as exc:
        # highdicom validates in its constructors; say which exam failed and why
        raise OutputError(
            f"Exam {inference.study_uid}: building the result objects failed: {exc}"
        ) from exc
    logger.info(
        "Built %d result objects for exam %s revision %d in %.2f s",
        len(outputs),
        inference.study_uid,
        revision,
        time.perf_counter() - started,
    )
    return outputs


def _pixel_objects(
    views: Sequence[ScoredView],
    ctx: ReportContext,
    *,
    sc_max_pixels: int,
    seg_top_fraction: float,
) -> list[OutputObject]:
    """Per view its Secondary Capture, then per view its Segmentation."""
    inference = ctx.inference
    captures = [
        OutputObject(
            OutputKind.SC,
            v.slot,
            build_secondary_capture(
                v,
                inference,
                ctx.plan[OutputKind.SC, v.slot],
                institution_name=ctx.institution_name,
                station_name=ctx.station_name,
                now=ctx.now,
                max_pixels=sc_max_pixels,
            ),
        )
        for v in views
    ]
    segmentations = [
        OutputObject(
            OutputKind.SEG,
            v.slot,
            build_segmentation(
                v,
                inference.bundle,
                ctx.plan[OutputKind.SEG, v.slot],
                tracking_uid=tracking_uid(
                    inference.study_uid,
                    bundle_key(inference.bundle),
                    ctx.revision,
                    f"{v.slot} saliency",
                ),
                institution_name=ctx.institution_name,
                station_name=ctx.station_name,
                now=ctx.now,
                top_fraction=seg_top_fraction,
            ),
        )
        for v in views
    ]
    return captures + segmentations


def _documents(
    views: Sequence[ScoredView],
    ctx: ReportContext,
    cad_operating_points: Sequence[str | None],
    withdrawn: Sequence[ReferencedDocument],
) -> tuple[list[OutputObject], list[OutputObject]]:
    """(the exam report and the view reports; the CAD SRs, the presentation state and, when
    a result is withdrawn, its rejection note)."""
    inference, plan = ctx.inference, ctx.plan
    reports = [OutputObject(OutputKind.SR, None, build_exam_report(views, ctx))]
    reports += [OutputObject(OutputKind.SR_VIEW, v.slot, build_view_report(v, ctx)) for v in views]
    rest = [
        OutputObject(
            OutputKind.CAD_SR,
            None,
            build_cad_report(views, ctx, identity, operating_point=name),
            operating_point=name,
        )
        for name, identity in _cad_reports(inference, ctx.revision, plan, cad_operating_points)
    ]
    rest.append(
        OutputObject(
            OutputKind.GSPS,
            None,
            build_presentation_state(
                views,
                inference.bundle,
                plan[OutputKind.GSPS, None],
                institution_name=ctx.institution_name,
                station_name=ctx.station_name,
                now=ctx.now,
            ),
        )
    )
    if withdrawn:
        rest.append(
            OutputObject(
                OutputKind.KOS,
                None,
                build_rejection_note(
                    withdrawn,
                    views,
                    inference.bundle,
                    plan[OutputKind.KOS, None],
                    revision=ctx.revision,
                    institution_name=ctx.institution_name,
                    station_name=ctx.station_name,
                    now=ctx.now,
                ),
            )
        )
    return reports, rest
