"""Mammography CAD SR (SOP class 1.2.840.10008.5.1.4.1.1.88.50, TID 4000) of one scored exam.

Breast workstations (SecurView, Sectra, Synapse, ...) draw CAD marks from this document, not
from TID 1500. Content tree (PS3.16 TID 4000 and its sub-templates):

- root CONTAINER DCM 111036 "Mammography CAD Report" with language (TID 1204);
- Image Library (TID 4020): the four views, each with Image Laterality, Image View, Patient
  Orientation, Study Date/Time and pixel spacing;
- CAD Processing and Findings Summary (TID 4001, DCM 111017 = "All algorithms succeeded; with
  findings") with the overall impression (TID 4002: Impression Description, Recommended
  Follow-up coded from CID 6028 - SCT 386053000 "Evaluation procedure" when recall is suggested at
  the chosen operating point, DCM 111140 "Normal interval follow-up" otherwise), inferred from
  one Individual Impression/Recommendation per breast (TID 4003), each inferred from one
  Single Image Finding per view (TID 4006, DCM 111099 "Selected region"): Rendering Intent,
  CAD Operating Point (with the maximum and a description), algorithm identification (TID 4019:
  bundle name, version, content hash), Center (POINT, the COA) and Outline (closed POLYLINE,
  the ROI) on the image, Certainty of Finding in %;
- Summary of Detections (TID 4015/4017: the detection performed, its algorithm and the images it
  ran on, by reference into the Image Library) and Summary of Analyses ("Not Attempted").

Operating points. The bundle's operating points are thresholds on breast/exam scores; here they
are numbered 1..N from the most specific (highest threshold) to the most sensitive, and N + 1
means "below every threshold". A finding's CAD Operating Point is the first number whose
threshold its breast score reaches. Rendering Intent is "Presentation Required" when the breast
score reaches the chosen operating point (the destination's, default the bundle's first) and
"Presentation Optional" below it, so a workstation that honours the operating point shows the
marks a reader asked for and may show the others.

Certainty of Finding is 0..100 %: the view's probability for a probability bundle, else the
logistic of the uncalibrated logit difference - the model's own confidence, not a calibrated
probability; the Algorithm Parameters say which. A calibrated exam probability, when the result
has one, is added to the overall impression as DCM 111047 "Probability of cancer" in %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.sr.codedict import codes as pcodes
from pydicom.uid import MammographyCADSRStorage

from mammo_node.domain import Laterality, OperatingPoint
from mammo_node.errors import OutputError
from mammo_node.writers import codes
from mammo_node.writers.identity import OutputIdentity
from mammo_node.writers.sources import ScoredView, pixel_spacing
from mammo_node.writers.sr import ReportContext, recall_suggested
from mammo_node.writers.sr_document import sr_document

REL = hd.sr.RelationshipTypeValues
MAMMOGRAPHY_CAD_REPORT = hd.sr.CodedConcept(*pcodes.DCM.MammographyCADReport)
SELECTED_REGION = hd.sr.CodedConcept("111099", "DCM", "Selected region")  # CID 6014
ALL_SUCCEEDED_WITH_FINDINGS = hd.sr.CodedConcept(
    "111242", "DCM", "All algorithms succeeded; with findings"
)
SUCCEEDED = hd.sr.CodedConcept("111222", "DCM", "Succeeded")
NOT_ATTEMPTED = hd.sr.CodedConcept("111225", "DCM", "Not Attempted")
PRESENTATION_REQUIRED = hd.sr.CodedConcept(
    "111150", "DCM", "Presentation Required: Rendering device is expected to present"
)
PRESENTATION_OPTIONAL = hd.sr.CodedConcept(
    "111151", "DCM", "Presentation Optional: Rendering device may present"
)
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
ENGLISH = hd.sr.CodedConcept("en", "RFC5646", "English")
ALGORITHM_PARAMETERS = hd.sr.CodedConcept("111002", "DCM", "Algorithm Parameters")


def _concept(code: object) -> hd.sr.CodedConcept:
    """A pydicom Code as a CodedConcept, without the U+200B some pydicom meanings contain."""
    value, scheme, meaning = code.value, code.scheme_designator, code.meaning  # type: ignore[attr-defined]
    return hd.sr.CodedConcept(value, scheme, meaning.replace("\u200b", ""))


def numbered_operating_points(points: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """Operating points from the most specific (highest threshold, number 1) down."""
    return sorted(points, key=lambda p: -p.threshold)


def operating_point_number(score: float, points: Sequence[OperatingPoint]) -> int:
    """1-based number of the first (most specific) point the score reaches; N + 1 if none."""
    ordered = numbered_operating_points(points)
    for number, point in enumerate(ordered, start=1):
        if score >= point.threshold:
            return number
    return len(ordered) + 1


def chosen_operating_point(
    points: Sequence[OperatingPoint], name: str | None
) -> OperatingPoint | None:
    if not points:
        return None
    if name is None:
        return points[0]
    for point in points:
        if point.name == name:
            return point
    raise OutputError(
        f"Operating point {name!r} is not one of the bundle's: {', '.join(p.name for p in points)}."
    )


def certainty_percent(view: ScoredView, is_probability: bool) -> float:
    """Certainty of Finding in % (see the module docstring)."""
    score = view.result.ensemble
    if is_probability:
        return round(100.0 * min(1.0, max(0.0, score)), 3)
    return round(100.0 / (1.0 + math.exp(-score)), 3)


def _num(name: object, value: float, unit: hd.sr.CodedConcept, rel: REL) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=rel)


def _text(name: object, value: str, rel: REL) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value[:1024], relationship_type=rel)


def _code(name: object, value: hd.sr.CodedConcept, rel: REL) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type=rel)


def _children(item: Dataset, children: Sequence[Dataset]) -> Dataset:
    if all(isinstance(c, hd.sr.ContentItem) for c in children):
        item.ContentSequence = hd.sr.ContentSequence(list(children))
    else:  # by-reference relationships are plain items, which highdicom's setter refuses
        Dataset.__setattr__(item, "ContentSequence", PydicomSequence(list(children)))
    return item


def _algorithm(bundle_name: str, version: str, parameters: Sequence[str]) -> list[Dataset]:
    """TID 4019 CAD Algorithm Identification."""
    items = [
        _text(pcodes.DCM.AlgorithmName, bundle_name[:64], REL.HAS_CONCEPT_MOD),
        _text(pcodes.DCM.AlgorithmVersion, version[:64], REL.HAS_CONCEPT_MOD),
    ]
    items += [_text(ALGORITHM_PARAMETERS, p, REL.HAS_CONCEPT_MOD) for p in parameters]
    return items


def _image_entry(view: ScoredView) -> hd.sr.ImageContentItem:
    """TID 4020 CAD Image Library Entry."""
    header = view.header
    image = hd.sr.ImageContentItem(
        name=hd.sr.CodedConcept("260753009", "SCT", "Source"),
        referenced_sop_class_uid=header.SOPClassUID,
        referenced_sop_instance_uid=header.SOPInstanceUID,
        relationship_type=REL.CONTAINS,
    )
    acq = REL.HAS_ACQ_CONTEXT
    items: list[Dataset] = [
        _code(codes.IMAGE_LATERALITY, codes.laterality_code(view.slot.laterality), acq),
        _code(codes.IMAGE_VIEW, codes.view_code(view.slot.view), acq),
    ]
    orientation = header.get("PatientOrientation")
    if orientation is not None and len(orientation) == 2 and all(orientation):
        items += [
            _text(pcodes.DCM.PatientOrientationRow, str(orientation[0]), acq),
            _text(pcodes.DCM.PatientOrientationColumn, str(orientation[1]), acq),
        ]
    if header.get("StudyDate"):
        items.append(
            hd.sr.DateContentItem(
                name=pcodes.DCM.StudyDate, value=str(header.StudyDate), relationship_type=acq
            )
        )
    if header.get("StudyTime"):
        items.append(
            hd.sr.TimeContentItem(
                name=pcodes.DCM.StudyTime,
                value=str(header.StudyTime).split(".")[0],
                relationship_type=acq,
            )
        )
    spacing = pixel_spacing(header)
    if spacing is not None:
        mm = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
        items += [
            _num(pcodes.DCM.HorizontalPixelSpacing, spacing[1], mm, acq),
            _num(pcodes.DCM.VerticalPixelSpacing, spacing[0], mm, acq),
        ]
    return _children(image, items)


def _selected_from(view: ScoredView) -> hd.sr.ImageContentItem:
    return hd.sr.ImageContentItem(
        name=hd.sr.CodedConcept("260753009", "SCT", "Source"),
        referenced_sop_class_uid=view.header.SOPClassUID,
        referenced_sop_instance_uid=view.header.SOPInstanceUID,
        relationship_type=REL.SELECTED_FROM,
    )


def _scoord(
    name: object, graphic_type: hd.sr.GraphicTypeValues, data: np.ndarray, view: ScoredView
) -> Dataset:
    item = hd.sr.ScoordContentItem(
        name=name,
        graphic_type=graphic_type,
        graphic_data=data,
        relationship_type=REL.HAS_PROPERTIES,
    )
    return _children(item, [_selected_from(view)])


def single_image_finding(
    view: ScoredView,
    *,
    breast_score: float,
    points: Sequence[OperatingPoint],
    chosen: OperatingPoint | None,
    algorithm: list[Dataset],
    certainty: float,
) -> Dataset:
    """TID 4006 for one view: rendering intent, operating point, algorithm, COA, ROI, certainty."""
    required = chosen is None or breast_score >= chosen.threshold
    number = operating_point_number(breast_score, points)
    ordered = numbered_operating_points(points)
    described = (
        f"{number}: breast score reaches operating point {ordered[number - 1].name!r} "
        f"(threshold {ordered[number - 1].threshold:g})"
        if number <= len(ordered)
        else f"{number}: breast score below every operating point of the bundle"
    )
    operating_point = _children(
        _num(pcodes.DCM.CADOperatingPoint, number, NO_UNITS, REL.HAS_PROPERTIES),
        [
            _num(
                pcodes.DCM.MaximumCADOperatingPoint,
                len(ordered) + 1,
                NO_UNITS,
                REL.HAS_PROPERTIES,
            ),
            _text(pcodes.DCM.CADOperatingPointDescription, described, REL.HAS_PROPERTIES),
        ],
    )
    intent = _children(
        _code(
            pcodes.DCM.RenderingIntent,
            PRESENTATION_REQUIRED if required else PRESENTATION_OPTIONAL,
            REL.HAS_CONCEPT_MOD,
        ),
        [operating_point],
    )
    x0, y0, x1, y1 = (float(v) for v in view.result.roi)
    cx, cy = (float(v) for v in view.result.coa)
    outline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)
    children: list[Dataset] = [intent, *algorithm]
    children += [
        _scoord(pcodes.DCM.Center, hd.sr.GraphicTypeValues.POINT, np.array([[cx, cy]]), view),
        _scoord(pcodes.DCM.Outline, hd.sr.GraphicTypeValues.POLYLINE, outline, view),
        _num(pcodes.DCM.CertaintyOfFinding, certainty, codes.PERCENT, REL.HAS_PROPERTIES),
    ]
    finding = _code(pcodes.DCM.SingleImageFinding, SELECTED_REGION, REL.CONTAINS)
    return _children(finding, children)


def build_cad_report(
    views: Sequence[ScoredView],
    ctx: ReportContext,
    identity: OutputIdentity,
    *,
    operating_point: str | None = None,
) -> hd.SOPClass:
    """The exam's Mammography CAD SR (see the module docstring).

    ``operating_point`` names the bundle operating point above which marks are "Presentation
    Required". highdicom has no Mammography CAD SR class; :func:`sr_document` writes the SR
    modules for any SR SOP class.
    """
    inference = ctx.inference
    bundle = inference.bundle
    points = list(bundle.operating_points)
    chosen = chosen_operating_point(points, operating_point)
    parameters = [
        f"manifest_sha256={bundle.manifest_sha256 or 'unknown'}",
        f"score_kind={bundle.score_kind}",
        "certainty="
        + (
            "view probability" if codes.is_probability(bundle) else "logistic of uncalibrated score"
        ),
    ]
    if bundle.is_demo:
        parameters.append(codes.DEMO_NOTICE)
    algorithm = _algorithm(bundle.name, bundle.version, parameters)
    library = _children(
        hd.sr.ContainerContentItem(name=pcodes.DCM.ImageLibrary, relationship_type=REL.CONTAINS),
        [_image_entry(v) for v in views],
    )
    breasts = inference.scores.breast_scores
    impressions = []
    for laterality in (Laterality.L, Laterality.R):
        breast_views = [v for v in views if v.slot.laterality is laterality]
        if not breast_views:
            continue
        score = breasts.get(laterality, max(v.result.ensemble for v in breast_views))
        findings = [
            single_image_finding(
                v,
                breast_score=score,
                points=points,
                chosen=chosen,
                algorithm=algorithm,
                certainty=certainty_percent(v, codes.is_probability(bundle)),
            )
            for v in breast_views
        ]
        required = chosen is None or score >= chosen.threshold
        impression = hd.sr.ContainerContentItem(
            name=_concept(pcodes.DCM.IndividualImpressionRecommendation),
            relationship_type=REL.INFERRED_FROM,
        )
        side = "right" if laterality is Laterality.R else "left"
        impressions.append(
            _children(
                impression,
                [
                    _code(
                        pcodes.DCM.RenderingIntent,
                        PRESENTATION_REQUIRED if required else PRESENTATION_OPTIONAL,
                        REL.HAS_CONCEPT_MOD,
                    ),
                    _text(
                        pcodes.DCM.ImpressionDescription,
                        f"Region of attention in the {side} breast, breast score "
                        f"{codes.format_aggregate(bundle, score)} "
                        f"({codes.aggregate_words(bundle)}).",
                        REL.CONTAINS,
                    ),
                    *findings,
                ],
            )
        )
    recall = recall_suggested(ctx, chosen)
    overall = [
        _text(pcodes.DCM.ImpressionDescription, ctx.verdict_sentence(chosen), REL.HAS_PROPERTIES),
        _code(
            pcodes.DCM.RecommendedFollowUp,
            codes.RECALL_SUGGESTED if recall else codes.NO_RECALL,
            REL.HAS_PROPERTIES,
        ),
    ]
    if ctx.probability is not None:
        overall.append(
            _num(
                codes.PROBABILITY_OF_CANCER,
                round(100.0 * ctx.probability, 3),
                codes.PERCENT,
                REL.HAS_PROPERTIES,
            )
        )
    summary = _children(
        _code(
            pcodes.DCM.CADProcessingAndFindingsSummary, ALL_SUCCEEDED_WITH_FINDINGS, REL.CONTAINS
        ),
        [*overall, *impressions],
    )
    # TID 4017: the images the detection ran on, by reference into the Image Library (item 2)
    image_refs = []
    for index, _view in enumerate(views, start=1):
        ref = Dataset()
        ref.RelationshipType = REL.INFERRED_FROM.value
        ref.ReferencedContentItemIdentifier = [1, 2, index]
        image_refs.append(ref)
    detection = _children(
        _code(pcodes.DCM.DetectionPerformed, SELECTED_REGION, REL.CONTAINS),
        [*algorithm, *image_refs],
    )
    detections = _children(
        _code(pcodes.DCM.SummaryOfDetections, SUCCEEDED, REL.CONTAINS),
        [
            _children(
                hd.sr.ContainerContentItem(
                    name=pcodes.DCM.SuccessfulDetections, relationship_type=REL.INFERRED_FROM
                ),
                [detection],
            )
        ],
    )
    analyses = _code(pcodes.DCM.SummaryOfAnalyses, NOT_ATTEMPTED, REL.CONTAINS)
    root = hd.sr.ContainerContentItem(name=MAMMOGRAPHY_CAD_REPORT, template_id="4000")
    root = _children(
        root,
        [
            _code(pcodes.DCM.LanguageOfContentItemAndDescendants, ENGLISH, REL.HAS_CONCEPT_MOD),
            library,
            summary,
            detections,
            analyses,
        ],
    )
    return sr_document(
        root, sop_class_uid=MammographyCADSRStorage, views=views, identity=identity, ctx=ctx
    )
