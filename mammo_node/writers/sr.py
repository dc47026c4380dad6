"""TID 1500 Structured Reports of one scored exam: one exam report plus one report per view.

Structure (all Comprehensive SR 1.2.840.10008.5.1.4.1.1.88.33, document title DCM 126000
"Imaging Measurement Report", each in its own series of the source study):

- **Per-view report** (``OutputKind.SR_VIEW``, series 9101..9104, one per scored view): Image
  Library with that one image (laterality and view appended as Image Laterality 111027 / Image
  View 111031), and in "Imaging Measurements" (126010) one TID 1410 planar-ROI group on it: the
  region of attention (closed POLYLINE box, geometric purpose SCT "Bounded by", finding site
  Breast + laterality) with the image score as a NUM that is INFERRED FROM the box (DCM 111030
  "Image Region") and from the centre of attention (POINT, DCM 111010 "Center"), and a Comment
  (DCM 121106) repeating the score as text. Every group and NUM carries the algorithm
  identification (TID 4019: bundle name, version, family DCM 123110). "Qualitative Evaluations"
  holds the coded verdict (DCM 111053 "Recommended Follow-up": SCT 386053000 / DCM 111140) and
  the notes.
- **Exam report** (``OutputKind.SR``, series 9100, the primary result whose SOP Instance UID is
  reported as ``sr_sop_instance_uid``): Image Library with all scored images; in "Imaging
  Measurements" the TID 1410 group of the *index view* - the highest-scoring view of the
  breast that sets the exam score; in "Derived Imaging Measurements" (126011) every image score,
  both breast scores (derivation SCT "Total", inferred from the CC and MLO images) and the exam
  score (derivation SCT "Maximum", inferred from all images), each a TID 300 NUM with tracking
  identifier, finding site and algorithm identification; in "Qualitative Evaluations" (UMLS
  C0034375) the operating-point verdict(s) and the notes.

Why this shape. OHIF 3.12.10 (the viewer ../shared/tools/ohif-check drives) parses only the
"Imaging Measurements" container of a TID 1500 report, crashes its SR viewport on any group there
without spatial coordinates, and draws an SR's regions only on the image of its first
measurement, because every MG image is a display set of its own (navigating to a measurement on
another image fails with "No image URI found"). So a single report of four views displays one
view, and breast/exam groups in "Imaging Measurements" break the whole report. In the layout
above every group in "Imaging Measurements" has coordinates on one image per document, so every
view's report draws that view's box, centre and score, and the exam report opens on the index
view's box and score. Breast and exam scores and the verdict sit where TID 1500 puts
derived results and qualitative evaluations (rows 10-14); OHIF 3.12 does not show those two
containers (the SC images carry the same numbers burned in), any TID 1500 reader does.
The documents point to each other without inventing content: each report lists its sibling
outputs (reports, SC, SEG of the same result) in Pertinent Other Evidence, and a group of the
index view has the same Tracking Identifier text in the exam report as in its view's report. Its
Tracking UID differs per document on purpose: OHIF uses the Tracking UID as the annotation UID,
so a UID shared by two SRs of one study makes the second SR draw nothing. A re-run lists the
previous result's SRs in Predecessor Documents.

Why one group with the centre under the score. OHIF 3.12.10's read-only SR display sometimes
renders before the viewport knows the SR's tracking UIDs and never redraws: no box, no label
(a forced render draws them). Its fallback, "track measurements" hydration (cornerstone
adapters), needs the SCOORD under the group's NUM ("No spatial coordinates group found"
otherwise) and turns a NUM-less POINT group into a Probe labelled with a pixel value, which
reads like a measurement. With the layout above the box hydrates as a RectangleROI labelled
with the score (the Comment), and the centre, under the NUM, is never a probe; both paths show
the box and the score, which ../shared/tools/ohif-check confirms (tests/test_viewer_ohif.py).

Coordinates are SCOORD image coordinates in the stored pixel grid of the source: (0, 0) is the
top-left corner of the top-left pixel, a pixel centre is at +0.5 (the convention of
``mammo_node.ml.preprocess``). The ROI (x0, y0, x1, y1), exclusive, is the closed polyline
through its corners (x0, y0) ... (x1, y1); the COA is written as given.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes as pcodes
from pydicom.uid import ComprehensiveSRStorage

from mammo_node.domain import ExamInference, Laterality, OperatingPoint, Slot
from mammo_node.errors import OutputError
from mammo_node.writers import codes
from mammo_node.writers.identity import (
    OutputIdentity,
    OutputKind,
    ReferencedDocument,
    bundle_key,
    tracking_uid,
)
from mammo_node.writers.sources import (
    ScoredView,
    algorithm_parameters,
    patient_orientation,
    pixel_spacing,
)
from mammo_node.writers.sr_document import sr_document

QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
DERIVED_IMAGING_MEASUREMENTS = hd.sr.CodedConcept(*pcodes.DCM.DerivedImagingMeasurements)
SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")
PIXELS = hd.sr.CodedConcept("{pixels}", "UCUM", "Pixels")
MILLIMETER = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
IMAGE_REGION = hd.sr.CodedConcept("111030", "DCM", "Image Region")

Plan = Mapping[tuple[OutputKind, Slot | None], OutputIdentity]


@dataclass(frozen=True)
class ReportContext:
    """Everything an output of one result needs besides its own view(s)."""

    inference: ExamInference
    revision: int
    previous: tuple[ReferencedDocument, ...]
    plan: Plan
    institution_name: str | None
    station_name: str | None
    now: datetime.datetime

    @property
    def algorithm(self) -> hd.sr.AlgorithmIdentification:
        bundle = self.inference.bundle
        return hd.sr.AlgorithmIdentification(
            name=bundle.name[:64],
            version=bundle.version[:64],
            parameters=algorithm_parameters(bundle),
            family=codes.ARTIFICIAL_INTELLIGENCE,
        )

    def tracking(self, what: str, document: str) -> hd.sr.TrackingIdentifier:
        """Identifier ``what``; its UID is unique per document (see the module docstring)."""
        bundle = self.inference.bundle
        uid = tracking_uid(
            self.inference.study_uid, bundle_key(bundle), self.revision, f"{document}: {what}"
        )
        return hd.sr.TrackingIdentifier(uid=uid, identifier=what)

    @property
    def probability(self) -> float | None:
        """The result's calibrated probability of cancer (0..1), None when it has none."""
        value = self.inference.probability
        if value is not None and not 0.0 <= value <= 1.0:
            raise OutputError(f"Calibrated probability {value!r} is outside 0..1.")
        return value

    def verdict_sentence(self, point: OperatingPoint | None) -> str:
        """One sentence for the chosen operating point (or "no operating point")."""
        if point is None:
            return "No operating point in the model bundle: no recall verdict."
        bundle = self.inference.bundle
        exam = self.inference.scores.exam_score
        word = "suggested" if recall_suggested(self, point) else "not suggested"
        return (
            f"Recall {word} at operating point {point.name}: exam score "
            f"{codes.format_aggregate(bundle, exam)}, threshold "
            f"{codes.format_aggregate(bundle, point.threshold)}."
        )

    def score_label(self, score: float) -> str:
        """``"<concept>: <value> <unit>"``, the way OHIF labels a NUM (two decimals)."""
        bundle = self.inference.bundle
        value = codes.reported_value(bundle, score)
        unit = codes.score_unit(bundle).value
        return f"{codes.score_concept(bundle).meaning}: {value:.2f} {unit}"

    def score_measurement(
        self,
        score: float,
        *,
        what: str | None = None,
        derivation: hd.sr.CodedConcept | None = None,
        laterality: Laterality | None = None,
        images: Sequence[Dataset] = (),
        aggregate: bool = False,
    ) -> hd.sr.Measurement:
        """One honestly labelled score NUM (TID 300); ``aggregate`` for breast / exam scores."""
        bundle = self.inference.bundle
        if aggregate:
            name, value = codes.aggregate_concept(bundle), codes.aggregate_value(bundle, score)
            unit = codes.SCORE_UNIT
        else:
            name, value = codes.score_concept(bundle), codes.reported_value(bundle, score)
            unit = codes.score_unit(bundle)
        return hd.sr.Measurement(
            name=name,
            value=value,
            unit=unit,
            tracking_identifier=self.tracking(what, "exam") if what else None,
            derivation=derivation,
            finding_sites=[codes.breast_site(laterality)] if images else None,
            algorithm_id=self.algorithm,
            referenced_images=[hd.sr.SourceImageForMeasurement.from_source_image(i) for i in images]
            or None,
        )


def recall_suggested(ctx: ReportContext, point: OperatingPoint | None) -> bool:
    """The verdict at ``point``: the worker's when it gave one, else exam score >= threshold."""
    if point is None:
        return False
    exam = ctx.inference.scores.exam_score
    return bool(ctx.inference.verdicts.get(point.name, exam >= point.threshold))


def coded_verdict(ctx: ReportContext, point: OperatingPoint | None) -> hd.sr.CodeContentItem:
    """Recommended Follow-up (CID 6028): recall (evaluation procedure) or normal interval."""
    return hd.sr.CodeContentItem(
        name=codes.RECOMMENDED_FOLLOW_UP,
        value=codes.RECALL_SUGGESTED if recall_suggested(ctx, point) else codes.NO_RECALL,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


# ------------------------------------------------------------------------------------------
# content
# ------------------------------------------------------------------------------------------


def index_view(views: Sequence[ScoredView], inference: ExamInference) -> ScoredView:
    """The highest-scoring view of the breast that sets the exam score (ties: SLOTS order)."""
    breasts = inference.scores.breast_scores
    lateralities = {v.slot.laterality for v in views}
    candidates = [lat for lat in lateralities if lat in breasts]
    if candidates:
        top = max(candidates, key=lambda lat: (breasts[lat], lat is Laterality.L))
        pool = [v for v in views if v.slot.laterality is top]
    else:
        pool = list(views)
    return max(pool, key=lambda v: v.result.ensemble)  # max keeps the first of equals


def region_groups(
    view: ScoredView, ctx: ReportContext, document: str
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """The one TID 1410 group of a view: ROI box, image score, COA (see the module docstring).

    The group's Image Region is the closed POLYLINE box (purpose SCT "Bounded by"); the score NUM
    is INFERRED FROM that box and from the centre of attention (POINT, concept DCM 111010
    "Center"); a Comment (DCM 121106) repeats the score as text.
    """
    x0, y0, x1, y1 = (float(v) for v in view.result.roi)
    cx, cy = (float(v) for v in view.result.coa)
    source = hd.sr.SourceImageForRegion.from_source_image(view.header)
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)
    region = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=ctx.tracking(f"{view.slot} region of attention", document),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=box, source_image=source
        ),
        finding_sites=[codes.breast_site(view.slot.laterality)],
        algorithm_id=ctx.algorithm,
        measurements=[ctx.score_measurement(view.result.ensemble)],
        geometric_purpose=codes.BOUNDED_BY,
    )
    # highdicom refuses coordinates under a TID 1410 measurement; TID 300 allows them (row 8)
    num = next(item for item in region[0].ContentSequence if item.ValueType == "NUM")
    num.ContentSequence.extend(
        [
            _inferred_from_scoord(IMAGE_REGION, hd.sr.GraphicTypeValues.POLYLINE, box, view),
            _inferred_from_scoord(
                codes.CENTER,
                hd.sr.GraphicTypeValues.POINT,
                np.array([[cx, cy]], dtype=np.float64),
                view,
            ),
        ]
    )
    region[0].ContentSequence.append(_text(codes.COMMENT, ctx.score_label(view.result.ensemble)))
    return [region]


def _inferred_from_scoord(
    name: hd.sr.CodedConcept,
    graphic_type: hd.sr.GraphicTypeValues,
    data: np.ndarray,
    view: ScoredView,
) -> hd.sr.ScoordContentItem:
    """A SCOORD (TID 320) the score is INFERRED FROM, SELECTED FROM the source image."""
    item = hd.sr.ScoordContentItem(
        name=name,
        graphic_type=graphic_type,
        graphic_data=data,
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    item.ContentSequence = hd.sr.ContentSequence(
        [hd.sr.SourceImageForRegion.from_source_image(view.header)]
    )
    return item


def image_library(views: Sequence[ScoredView]) -> hd.sr.ContainerContentItem:
    """TID 1600 with laterality, view, orientation and spacing of each image (TID 1602/1603)."""
    group = hd.sr.ContainerContentItem(
        name=pcodes.DCM.ImageLibraryGroup, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    group.ContentSequence = hd.sr.ContentSequence(
        [_acq(hd.sr.CodeContentItem, pcodes.DCM.Modality, _modality(views[0].header))]
    )
    for view in views:
        item = hd.sr.ImageContentItem(
            name=SOURCE,
            referenced_sop_class_uid=view.header.SOPClassUID,
            referenced_sop_instance_uid=view.header.SOPInstanceUID,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        item.ContentSequence = hd.sr.ContentSequence(_library_descriptors(view))
        group.ContentSequence.append(item)
    library = hd.sr.ContainerContentItem(
        name=pcodes.DCM.ImageLibrary, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    library.ContentSequence = hd.sr.ContentSequence([group])
    return library


def _acq(factory: type, name: object, value: object, **kwargs: object) -> hd.sr.ContentItem:
    return factory(
        name=name,
        value=value,
        relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
        **kwargs,
    )


def _modality(header: Dataset) -> hd.sr.CodedConcept:
    value = str(header.get("Modality", "MG"))
    for code in pcodes.cid29.concepts.values():
        if code.value == value:
            return hd.sr.CodedConcept(*code)
    return hd.sr.CodedConcept("MG", "DCM", "Mammography")


def _library_descriptors(view: ScoredView) -> list[hd.sr.ContentItem]:
    slot, header = view.slot, view.header
    items: list[hd.sr.ContentItem] = [
        _acq(hd.sr.CodeContentItem, codes.IMAGE_LATERALITY, codes.laterality_code(slot.laterality)),
        _acq(hd.sr.CodeContentItem, codes.IMAGE_VIEW, codes.view_code(slot.view)),
    ]
    if "FrameOfReferenceUID" in header:
        items.append(
            _acq(
                hd.sr.UIDRefContentItem, pcodes.DCM.FrameOfReferenceUID, header.FrameOfReferenceUID
            )
        )
    items += [
        _acq(hd.sr.NumContentItem, pcodes.DCM.PixelDataRows, view.rows, unit=PIXELS),
        _acq(hd.sr.NumContentItem, pcodes.DCM.PixelDataColumns, view.columns, unit=PIXELS),
    ]
    orientation = patient_orientation(header)
    if orientation is not None:
        items += [
            _acq(hd.sr.TextContentItem, pcodes.DCM.PatientOrientationRow, orientation[0]),
            _acq(hd.sr.TextContentItem, pcodes.DCM.PatientOrientationColumn, orientation[1]),
        ]
    spacing = pixel_spacing(header)
    if spacing is not None:
        items += [
            _acq(
                hd.sr.NumContentItem, pcodes.DCM.HorizontalPixelSpacing, spacing[1], unit=MILLIMETER
            ),
            _acq(
                hd.sr.NumContentItem, pcodes.DCM.VerticalPixelSpacing, spacing[0], unit=MILLIMETER
            ),
        ]
    return items


def derived_measurements(
    views: Sequence[ScoredView], ctx: ReportContext
) -> hd.sr.ContainerContentItem:
    """Image, breast and exam scores (TID 300 NUMs) with the images each was inferred from."""
    scores = ctx.inference.scores
    items: list[hd.sr.Measurement] = [
        ctx.score_measurement(
            v.result.ensemble,
            what=f"{v.slot} image score",
            laterality=v.slot.laterality,
            images=[v.header],
        )
        for v in views
    ]
    for laterality in (Laterality.L, Laterality.R):
        breast_views = [v for v in views if v.slot.laterality is laterality]
        if laterality in scores.breast_scores and breast_views:
            items.append(
                ctx.score_measurement(
                    scores.breast_scores[laterality],
                    what=f"breast {laterality.value} score",
                    derivation=codes.TOTAL,
                    laterality=laterality,
                    images=[v.header for v in breast_views],
                    aggregate=True,
                )
            )
    items.append(
        ctx.score_measurement(
            scores.exam_score,
            what="exam score",
            derivation=codes.MAXIMUM,
            laterality=None,
            images=[v.header for v in views],
            aggregate=True,
        )
    )
    if ctx.probability is not None:  # calibrated by the bundle: DCM 111047 in %
        items.append(
            hd.sr.Measurement(
                name=codes.PROBABILITY_OF_CANCER,
                value=round(100.0 * ctx.probability, 6),
                unit=codes.PERCENT,
                tracking_identifier=ctx.tracking("exam probability", "exam"),
                finding_sites=[codes.breast_site(None)],
                algorithm_id=ctx.algorithm,
                referenced_images=[
                    hd.sr.SourceImageForMeasurement.from_source_image(v.header) for v in views
                ],
            )
        )
    if ctx.inference.category is not None:
        items.append(
            hd.sr.Measurement(
                name=codes.READING_CATEGORY,
                value=int(ctx.inference.category),
                unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                tracking_identifier=ctx.tracking("exam category", "exam"),
                algorithm_id=ctx.algorithm,
            )
        )
    container = hd.sr.ContainerContentItem(
        name=DERIVED_IMAGING_MEASUREMENTS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence([m[0] for m in items])
    return container


def verdict_texts(ctx: ReportContext) -> list[str]:
    """E.g. ``"Recall suggested at sensitivity_90: exam score 3.10 >= threshold 2.50 (..."``."""
    bundle = ctx.inference.bundle
    exam = ctx.inference.scores.exam_score
    texts = []
    for point in bundle.operating_points:
        at_or_above = ctx.inference.verdicts.get(point.name, exam >= point.threshold)
        exam_text = codes.format_aggregate(bundle, exam)
        threshold = codes.format_aggregate(bundle, point.threshold)
        if at_or_above:
            head = (
                f"Recall suggested at {point.name}: exam score {exam_text} >= threshold {threshold}"
            )
        else:
            head = (
                f"Recall not suggested at {point.name}: exam score {exam_text} < "
                f"threshold {threshold}"
            )
        detail = [f"operating point {point.name!r} of {bundle.name} {bundle.version}"]
        if point.sensitivity is not None:
            detail.append(f"sensitivity {point.sensitivity:.3f}")
        if point.specificity is not None:
            detail.append(f"specificity {point.specificity:.3f}")
        texts.append(f"{head} ({', '.join(detail)}).")
    return texts


def qualitative_evaluations(
    ctx: ReportContext, extra: Sequence[str] = ()
) -> hd.sr.ContainerContentItem:
    bundle = ctx.inference.bundle
    items: list[hd.sr.ContentItem] = [_text(codes.OPERATING_POINT_VERDICT, text) for text in extra]
    first = bundle.operating_points[0] if bundle.operating_points else None
    items.insert(0, coded_verdict(ctx, first))  # a RIS / worklist can act on a code
    notice = codes.demo_notice(bundle)
    if notice:
        items.append(_text(codes.COMMENT, f"{notice}: results of a demonstration model bundle."))
    items.append(_text(codes.COMMENT, codes.score_explanation(bundle)))
    items.append(
        _text(
            codes.COMMENT,
            f"Model bundle {bundle.name} {bundle.version} ({bundle.architecture}); result "
            f"revision {ctx.revision}. Not verified by a physician.",
        )
    )
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def measurement_report(
    views: Sequence[ScoredView],
    groups: Sequence[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations],
    ctx: ReportContext,
    extra_containers: Sequence[hd.sr.ContainerContentItem],
) -> hd.sr.MeasurementReport:
    """TID 1500 root: language, observer, procedure, library, measurements, then extras."""
    bundle = ctx.inference.bundle
    observer = hd.sr.ObserverContext(
        observer_type=pcodes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=bundle.device_uid,
            name=bundle.name[:64],
            manufacturer_name=codes.MANUFACTURER,
            model_name=f"{bundle.name} {bundle.version}"[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.MAMMOGRAPHY,
        imaging_measurements=list(groups),
        title=pcodes.cid7021.ImagingMeasurementReport,
    )
    root = report[0].ContentSequence
    position = next(i for i, item in enumerate(root) if item.name == pcodes.DCM.ImagingMeasurements)
    root.insert(position, image_library(views))
    for container in extra_containers:
        root.append(container)
    return report


# ------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------


def build_exam_report(views: Sequence[ScoredView], ctx: ReportContext) -> hd.SOPClass:
    """The primary, exam-level report (see the module docstring)."""
    index = index_view(views, ctx.inference)
    content = measurement_report(
        views,
        region_groups(index, ctx, "exam"),
        ctx,
        [derived_measurements(views, ctx), qualitative_evaluations(ctx, verdict_texts(ctx))],
    )
    identity = ctx.plan[OutputKind.SR, None]
    predecessors = list(ctx.previous)
    siblings = [i for key, i in ctx.plan.items() if key != (OutputKind.SR, None)]
    return _document(views, content, identity, predecessors, siblings, ctx)


def build_view_report(view: ScoredView, ctx: ReportContext) -> hd.SOPClass:
    """The report of one view: its region and centre of attention (see the module docstring)."""
    exam = ctx.plan[OutputKind.SR, None]
    note = (
        f"Breast and exam scores of this result are in the exam report, SOP Instance UID "
        f"{exam.sop_instance_uid} (series {exam.series_number})."
    )
    qualitative = qualitative_evaluations(ctx)
    qualitative.ContentSequence.append(_text(codes.COMMENT, note))
    content = measurement_report(
        [view], region_groups(view, ctx, str(view.slot)), ctx, [qualitative]
    )
    identity = ctx.plan[OutputKind.SR_VIEW, view.slot]
    predecessors = [d for d in ctx.previous if d.slot in (None, view.slot)]
    siblings = [
        i
        for (kind, slot), i in ctx.plan.items()
        if (kind, slot) == (OutputKind.SR, None) or (slot == view.slot and i is not identity)
    ]
    return _document([view], content, identity, predecessors, siblings, ctx)


def _document(
    views: Sequence[ScoredView],
    content: hd.sr.MeasurementReport,
    identity: OutputIdentity,
    predecessors: Sequence[ReferencedDocument],
    siblings: Sequence[OutputIdentity],
    ctx: ReportContext,
) -> hd.SOPClass:
    return sr_document(
        content[0],
        sop_class_uid=ComprehensiveSRStorage,
        views=views,
        identity=identity,
        ctx=ctx,
        predecessors=predecessors,
        siblings=siblings,
        local_codes=True,
    )


# ------------------------------------------------------------------------------------------
# reading back
# ------------------------------------------------------------------------------------------


@dataclass
class ReportReading:
    """What an SR written here says, in the writers' own terms (scores back in model units)."""

    boxes: dict[str, tuple[float, float, float, float]]  # SOP UID -> (x0, y0, x1, y1)
    box_scores: dict[str, float]  # SOP UID -> image score in the box's group
    centres: dict[str, tuple[float, float]]  # SOP UID -> (x, y)
    scores: dict[str, float]  # tracking identifier -> score, from Derived Imaging Measurements
    texts: list[str]
    unit: str


def read_report(dataset: Dataset) -> ReportReading:
    """Parse an SR made by :func:`build_exam_report` / :func:`build_view_report`."""
    sr = hd.sr.ComprehensiveSR.from_dataset(dataset)
    report = sr.content
    reading = ReportReading({}, {}, {}, {}, [], "")
    for group in report.get_planar_roi_measurement_groups():
        region = group.roi
        sop_uid = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        data = np.asarray(region.value, dtype=float)
        if region.graphic_type is hd.sr.GraphicTypeValues.POINT:
            reading.centres[sop_uid] = (float(data[0, 0]), float(data[0, 1]))
            continue
        reading.boxes[sop_uid] = (
            float(data[:, 0].min()),
            float(data[:, 1].min()),
            float(data[:, 0].max()),
            float(data[:, 1].max()),
        )
        for measurement in group.get_measurements():
            reading.unit = measurement.unit.value
            reading.box_scores[sop_uid] = _model_units(measurement.value, reading.unit)
            for child in measurement[0].get("ContentSequence", []):
                if child.ValueType == "SCOORD" and child.GraphicType == "POINT":
                    reading.centres[sop_uid] = (
                        float(child.GraphicData[0]),
                        float(child.GraphicData[1]),
                    )
    for item in report[0].ContentSequence:
        if item.name == DERIVED_IMAGING_MEASUREMENTS:
            for num in item.ContentSequence:
                what = next(
                    c.value for c in num.ContentSequence if c.name == pcodes.DCM.TrackingIdentifier
                )
                reading.unit = num.unit.value
                reading.scores[what] = _model_units(num.value, reading.unit)
        elif item.name == QUALITATIVE_EVALUATIONS:
            reading.texts += [str(t.value) for t in item.ContentSequence]
    return reading


def _model_units(value: float, unit: str) -> float:
    return float(value) / 100.0 if unit == "%" else float(value)


__all__ = [
    "ReportContext",
    "ReportReading",
    "build_exam_report",
    "build_view_report",
    "index_view",
    "read_report",
]
