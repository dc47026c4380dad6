"""Binary Segmentation per view: the most salient pixels of the model's saliency map.

The segment is the top ``top_fraction`` (default 1 %) of the saliency map's pixels, ties at the
cut included, zero saliency never: the same rule by which the model picks its centre of
attention (the top 1 % by |gradient|, Dahl et al.), taken on the map the model made (its own
grid) and drawn on the stored pixel grid, each stored pixel taking the map pixel its centre lies
in (:func:`mammo_node.writers.saliency_grid.top_mask`). So the overlay shows the pixels the COA
summarises; an absolute threshold would mean a different area for every image, because the maps
are scaled per image.

For OHIF 3.12 to overlay it (see ../shared/docs/DICOM_OUTPUTS.md): BINARY, one SEG per series,
Shared Functional Groups with Pixel Measures (Pixel Spacing = the source's Imager Pixel Spacing,
else Pixel Spacing; Slice Thickness = its Body Part Thickness, see :func:`projection_thickness`)
and Plane Orientation. The SEG frame is the source's pixel grid, pixel for pixel. Plane
Orientation is the source's Image Orientation (Patient) when it has one; a projection mammogram
usually has none, and then the SEG gets ``1\\0\\0\\0\\1\\0`` - the orientation that viewers
(cornerstone3D in OHIF) assume for such an image. It states "same grid as the source", nothing
about the patient: OHIF compares the SEG's orientation with the one it assumes for the source and
flips or rotates the SEG pixels by the difference, so any other value misplaces the overlay.
(Direction cosines translated from the Patient Orientation letters were tried: OHIF drew the CC
overlays transposed and refused the MLO ones as "orthogonal to the acquisition plane".) The patient
directions stay in Patient Orientation, copied from the source. Content Qualification is
RESEARCH: no bundle of this project is a cleared medical device.
"""

from __future__ import annotations

import datetime
import logging

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

import mammo_node
from mammo_node.domain import BundleInfo
from mammo_node.writers import codes
from mammo_node.writers.identity import OutputIdentity
from mammo_node.writers.saliency_grid import top_mask
from mammo_node.writers.sources import (
    ScoredView,
    algorithm_parameters,
    contributing_equipment,
    patient_orientation,
    pixel_spacing,
)

logger = logging.getLogger(__name__)

DEFAULT_TOP_FRACTION = 0.01
PIXEL_GRID_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def projection_thickness(header: Dataset) -> float:
    """Slice Thickness of a projection: the compressed breast (Body Part Thickness), else 1 mm.

    The SEG's Pixel Measures need one; a projection image's pixel spans the whole breast, so
    its Body Part Thickness (0018,11A0) is the honest value. Without it, 1 mm is written as a
    nominal value (logged).
    """
    value = header.get("BodyPartThickness")
    try:
        thickness = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        thickness = 0.0
    if thickness > 0:
        return thickness
    logger.info(
        "Image %s has no Body Part Thickness; SEG Slice Thickness set to a nominal 1 mm.",
        header.get("SOPInstanceUID"),
    )
    return 1.0


def segment_description(
    view: ScoredView, bundle: BundleInfo, top_fraction: float, tracking_uid: str
) -> hd.seg.SegmentDescription:
    percent = f"{top_fraction * 100:g} %"
    algorithm = hd.AlgorithmIdentificationSequence(
        name=bundle.name[:64],
        family=codes.ARTIFICIAL_INTELLIGENCE,
        version=bundle.version[:64],
        source=codes.MANUFACTURER,
        parameters={"top_fraction": f"{top_fraction:g}"}
        | dict(p.split("=", 1) for p in algorithm_parameters(bundle) if "=" in p),
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=f"{view.slot} saliency top {percent}"[:64],
        segmented_property_category=codes.SPATIAL_AND_RELATIONAL,
        segmented_property_type=codes.SALIENCY,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=tracking_uid,
        tracking_id=f"{view.slot} saliency top {percent}"[:64],
        anatomic_regions=[codes.BREAST],
    )


def build_segmentation(
    view: ScoredView,
    bundle: BundleInfo,
    identity: OutputIdentity,
    *,
    tracking_uid: str,
    institution_name: str | None,
    station_name: str | None,
    now: datetime.datetime,
    top_fraction: float = DEFAULT_TOP_FRACTION,
) -> hd.seg.Segmentation:
    mask = top_mask(view.result.saliency, top_fraction)
    spacing = pixel_spacing(view.header)
    measures = None
    if spacing is not None:
        measures = hd.PixelMeasuresSequence(
            pixel_spacing=spacing, slice_thickness=projection_thickness(view.header)
        )
    demo = "DEMO NOT FOR CLINICAL USE: " if bundle.is_demo else ""
    description = f"{demo}top {top_fraction * 100:g} % saliency of {bundle.name} {bundle.version}"
    seg = hd.seg.Segmentation(
        source_images=[view.header],
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(view, bundle, top_fraction, tracking_uid)],
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number,
        manufacturer=codes.MANUFACTURER,
        manufacturer_model_name=codes.MANUFACTURER,
        software_versions=mammo_node.__version__,
        device_serial_number=bundle.device_uid[:64],
        content_description=description[:64],
        content_label="SALIENCY",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        pixel_measures=measures,
        omit_empty_frames=False,
        contributing_equipment=[
            contributing_equipment(
                bundle, institution_name=institution_name, station_name=station_name
            )
        ],
        series_description=identity.series_description,
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        institution_name=institution_name,
        content_date=now.date(),
        content_time=now.time(),
        series_date=now.date(),
        series_time=now.time(),
    )
    _add_orientation(seg, view.header)
    if station_name:
        seg.StationName = station_name
    return seg


def _add_orientation(seg: Dataset, header: Dataset) -> None:
    """Patient Orientation copied; Plane Orientation = the source's, else the pixel grid's."""
    orientation = patient_orientation(header)
    if orientation is not None:
        seg.PatientOrientation = list(orientation)
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" in shared:
        return
    cosines = header.get("ImageOrientationPatient") or PIXEL_GRID_ORIENTATION
    item = Dataset()
    item.ImageOrientationPatient = [float(c) for c in cosines]
    shared.PlaneOrientationSequence = [item]
