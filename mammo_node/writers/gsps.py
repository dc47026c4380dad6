"""Grayscale Softcopy Presentation State over the exam's four views (PS3.3 A.33.1).

General PACS viewers that show no SR marks do apply a presentation state: this one draws, on
the original pixels of each scored view, the ROI box (closed POLYLINE), the centre of attention
(a small cross, two POLYLINEs, on its own layer) and the image score as text, on three graphic
layers ("ROI", "COA", "SCORE"). Coordinates are PIXEL units in the stored grid - the same numbers
as in the SR - and nothing changes how the image itself is displayed: the displayed area is the
whole image, no rotation, flip or zoom, and the VOI is each image's own first window (or none).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset

import mammo_node
from mammo_node.domain import BundleInfo
from mammo_node.writers import codes
from mammo_node.writers.identity import OutputIdentity
from mammo_node.writers.sources import ScoredView, contributing_equipment

PIXEL = hd.pr.AnnotationUnitsValues.PIXEL
LAYER_ROI, LAYER_COA, LAYER_SCORE = "ROI", "COA", "SCORE"


def _layers(bundle: BundleInfo) -> list[hd.pr.GraphicLayer]:
    model = f"{bundle.name} {bundle.version}"
    return [
        hd.pr.GraphicLayer(LAYER_ROI, order=1, description=f"Region of attention ({model})"),
        hd.pr.GraphicLayer(LAYER_COA, order=2, description=f"Centre of attention ({model})"),
        hd.pr.GraphicLayer(LAYER_SCORE, order=3, description=f"Image score ({model})"),
    ]


def score_text(view: ScoredView, bundle: BundleInfo) -> str:
    demo = " DEMO" if bundle.is_demo else ""
    return f"AI {view.slot} score {codes.format_score(bundle, view.result.ensemble)}{demo}"[:64]


def _annotations(
    view: ScoredView, bundle: BundleInfo, layers: Sequence[hd.pr.GraphicLayer]
) -> list[hd.pr.GraphicAnnotation]:
    roi_layer, coa_layer, score_layer = layers
    x0, y0, x1, y1 = (float(v) for v in view.result.roi)
    cx, cy = (float(v) for v in view.result.coa)
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)
    arm = max(4.0, 0.02 * max(view.rows, view.columns))
    cols, rows = float(view.columns), float(view.rows)
    horizontal = np.array([[max(0.0, cx - arm), cy], [min(cols, cx + arm), cy]])
    vertical = np.array([[cx, max(0.0, cy - arm)], [cx, min(rows, cy + arm)]])
    # text inside the image, above the box when there is room, else below it
    height = max(8.0, 0.04 * rows)
    top = y0 - height if y0 - height >= 0 else min(rows - height, y1)
    right = min(cols, max(x1, x0 + 12.0 * height))
    left = max(0.0, right - 12.0 * height)
    text = hd.pr.TextObject(
        text_value=score_text(view, bundle),
        units=PIXEL,
        bounding_box=(left, top, right, top + height),
        text_justification=hd.pr.TextJustificationValues.LEFT,
    )
    images = [view.header]
    return [
        hd.pr.GraphicAnnotation(
            referenced_images=images,
            graphic_layer=roi_layer,
            graphic_objects=[hd.pr.GraphicObject(hd.pr.GraphicTypeValues.POLYLINE, box, PIXEL)],
        ),
        hd.pr.GraphicAnnotation(
            referenced_images=images,
            graphic_layer=coa_layer,
            graphic_objects=[
                hd.pr.GraphicObject(hd.pr.GraphicTypeValues.POLYLINE, horizontal, PIXEL),
                hd.pr.GraphicObject(hd.pr.GraphicTypeValues.POLYLINE, vertical, PIXEL),
            ],
        ),
        hd.pr.GraphicAnnotation(
            referenced_images=images, graphic_layer=score_layer, text_objects=[text]
        ),
    ]


def _voi(views: Sequence[ScoredView]) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    """Each image's own first window, so the presentation state changes no grey levels."""
    transforms = []
    for view in views:
        center, width = view.header.get("WindowCenter"), view.header.get("WindowWidth")
        if center is None or width is None:
            continue
        c = float(center[0] if isinstance(center, Sequence) else center)
        w = float(width[0] if isinstance(width, Sequence) else width)
        if w <= 0:
            continue
        transforms.append(
            hd.pr.SoftcopyVOILUTTransformation(
                window_center=c,
                window_width=w,
                voi_lut_function=str(view.header.get("VOILUTFunction", "LINEAR")),
                referenced_images=hd.ReferencedImageSequence(referenced_images=[view.header]),
            )
        )
    return transforms or None


def _presentation_lut(views: Sequence[ScoredView]) -> hd.PresentationLUTTransformation:
    """INVERSE for MONOCHROME1 sources, so that they show as they do without the state (a
    presentation state's IDENTITY would turn them negative). One Presentation LUT serves all
    views: an exam mixing MONOCHROME1 and MONOCHROME2 (not seen in practice) follows most."""
    inverse = sum(
        str(v.header.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1" for v in views
    )
    shape = "INVERSE" if inverse * 2 > len(views) else "IDENTITY"
    return hd.PresentationLUTTransformation(presentation_lut_shape=shape)


def _same_size_stand_ins(views: Sequence[ScoredView]) -> list[Dataset]:
    """The views' headers for highdicom, which wants one image size per presentation state:
    copies with the first view's Rows / Columns (used only for its single displayed area, which
    :func:`build_presentation_state` replaces by one area per view)."""
    rows, columns = views[0].rows, views[0].columns
    stand_ins = []
    for view in views:
        header = Dataset()
        for element in view.header:  # shared elements, never mutated: Rows / Columns are new
            if element.keyword not in ("Rows", "Columns"):
                header.add(element)
        header.Rows, header.Columns = rows, columns
        stand_ins.append(header)
    return stand_ins


def _displayed_area(view: ScoredView) -> Dataset:
    area = Dataset()
    area.ReferencedImageSequence = hd.ReferencedImageSequence(referenced_images=[view.header])
    area.PixelOriginInterpretation = "VOLUME"
    area.DisplayedAreaTopLeftHandCorner = [1, 1]
    area.DisplayedAreaBottomRightHandCorner = [view.columns, view.rows]
    area.PresentationSizeMode = "SCALE TO FIT"
    area.PresentationPixelAspectRatio = [1, 1]
    return area


def build_presentation_state(
    views: Sequence[ScoredView],
    bundle: BundleInfo,
    identity: OutputIdentity,
    *,
    institution_name: str | None,
    station_name: str | None,
    now: datetime.datetime,
) -> Dataset:
    """One GSPS referencing every scored view (see the module docstring)."""
    layers = _layers(bundle)
    annotations = [a for v in views for a in _annotations(v, bundle, layers)]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=_same_size_stand_ins(views),
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number,
        manufacturer=codes.MANUFACTURER,
        manufacturer_model_name=codes.MANUFACTURER,
        software_versions=mammo_node.__version__,
        device_serial_number=bundle.device_uid[-16:],
        content_label="AI_MARKS",
        content_description=(
            (f"{codes.DEMO_NOTICE}: " if bundle.is_demo else "")
            + f"AI marks by {bundle.name} {bundle.version}"
        )[:64],
        graphic_annotations=annotations,
        graphic_layers=layers,
        voi_lut_transformations=_voi(views),
        presentation_lut_transformation=_presentation_lut(views),
        institution_name=institution_name,
        contributing_equipment=[
            contributing_equipment(
                bundle, institution_name=institution_name, station_name=station_name
            )
        ],
    )
    # the whole of each image, at its own size (real views differ in size)
    gsps.DisplayedAreaSelectionSequence = [_displayed_area(v) for v in views]
    gsps.SeriesDescription = identity.series_description
    gsps.Laterality = ""  # Type 2C (paired organ); the series covers both breasts
    gsps.PresentationCreationDate = now.strftime("%Y%m%d")
    gsps.PresentationCreationTime = now.strftime("%H%M%S")
    if station_name:
        gsps.StationName = station_name
    return gsps
