"""Small 4-view exams and hand-made inference results for the writer tests.

``make_exam`` builds For Presentation MG datasets (on ``tests.helpers.mg.mg_dataset``): a
half-ellipse breast against the chest wall, which is on the left of the stored image for left
breasts and on the right for right breasts (stored mirrored, as detectors store them; Patient
Orientation A\\R, A\\FR, P\\L, P\\FL).
``make_inference`` places an ROI, a COA and a Gaussian saliency blob at chosen stored-grid
positions so that tests can assert exactly where they appear in every output.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    RLELossless,
    generate_uid,
)

from mammo_node.domain import (
    SLOTS,
    BundleInfo,
    ExamInference,
    ExamScores,
    Laterality,
    OperatingPoint,
    SaliencyMap,
    Slot,
    View,
    ViewInference,
)
from tests.helpers.mg import mg_dataset

ORIENTATION = {
    Slot(Laterality.L, View.CC): ["A", "R"],
    Slot(Laterality.L, View.MLO): ["A", "FR"],
    Slot(Laterality.R, View.CC): ["P", "L"],
    Slot(Laterality.R, View.MLO): ["P", "FL"],
}
NOW = datetime.datetime(2026, 11, 25, 10, 30, 0)


@dataclass
class ExamSpec:
    rows: int = 256
    columns: int = 208
    photometric: str = "MONOCHROME2"
    frame_of_reference: bool = True
    charset: str = "ISO_IR 100"
    patient_name: str = "Müller^Anna"
    rle_slots: tuple[Slot, ...] = ()
    one_series: bool = True  # all four views in one series, as many modalities send them
    seed: int = 7
    study_uid: str = field(default_factory=generate_uid)


def breast_mask(slot: Slot, rows: int, columns: int) -> np.ndarray:
    """Half ellipse against the chest wall (left edge for L, right edge for R)."""
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    wall_x = 0.0 if slot.laterality is Laterality.L else columns - 1.0
    return ((xx - wall_x) / (0.85 * columns)) ** 2 + ((yy - rows / 2) / (0.46 * rows)) ** 2 <= 1.0


def view_dataset(slot: Slot, spec: ExamSpec, study: Dataset, index: int) -> Dataset:
    """One view of ``make_exam``: the common MG builder plus what a detector writes."""
    rng = np.random.default_rng(spec.seed + index)
    rows, cols = spec.rows, spec.columns
    tissue = breast_mask(slot, rows, cols)
    values = np.where(tissue, 1800.0, 120.0) + rng.normal(0.0, 60.0, (rows, cols))
    stored = np.clip(values, 0, 4095).astype(np.uint16)
    if spec.photometric == "MONOCHROME1":
        stored = (4095 - stored).astype(np.uint16)

    ds = mg_dataset(
        slot.laterality.value,
        slot.view.value,
        pixels=stored,
        photometric=spec.photometric,
        sop_class=DigitalMammographyXRayImageStorageForPresentation,
    )
    ds.update(study)
    ds.SeriesInstanceUID = study.SeriesInstanceUID if spec.one_series else generate_uid()
    ds.SeriesNumber = 1 if spec.one_series else index + 1
    ds.InstanceNumber = index + 1 if spec.one_series else 1
    ds.SeriesDescription = "MG screening" if spec.one_series else str(slot)
    ds.Manufacturer = "Synthetic Test Detector"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.BodyPartExamined = "BREAST"
    ds.PatientOrientation = ORIENTATION[slot]
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.BodyPartThickness = 52
    if spec.frame_of_reference:
        ds.PositionReferenceIndicator = ""
    else:
        del ds.FrameOfReferenceUID
    ds.WindowCenter, ds.WindowWidth = (
        (2100, 2600) if spec.photometric == "MONOCHROME1" else (2000, 2600)
    )
    ds.VOILUTFunction = "LINEAR"
    ds.PresentationLUTShape = "INVERSE" if spec.photometric == "MONOCHROME1" else "IDENTITY"
    if slot in spec.rle_slots:
        ds.compress(RLELossless, stored)
    return ds


def make_exam(spec: ExamSpec | None = None) -> dict[Slot, Dataset]:
    spec = spec or ExamSpec()
    study = Dataset()
    study.SpecificCharacterSet = spec.charset
    study.StudyInstanceUID = spec.study_uid
    study.FrameOfReferenceUID = generate_uid()
    study.SeriesInstanceUID = generate_uid()
    study.PatientName = spec.patient_name
    study.PatientID = "WRT-0001"
    study.PatientBirthDate = "19600101"
    study.PatientSex = "F"
    study.PatientAge = "066Y"
    study.StudyDate = "20261120"
    study.StudyTime = "093000"
    study.AccessionNumber = "ACC42"
    study.StudyID = "S1"
    study.ReferringPhysicianName = ""
    study.StudyDescription = "Screening mammography"
    study.IssuerOfPatientID = "HOSP-A"
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID = "NAT-77", "NATION", "TEXT"
    study.OtherPatientIDsSequence = [other]
    procedure = Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator = "24623002", "SCT"
    procedure.CodeMeaning = "Screening mammography"
    study.ProcedureCodeSequence = [procedure]
    request = Dataset()
    request.AccessionNumber = "ACC42"
    request.RequestedProcedureID = "RP42"
    request.RequestedProcedureDescription = "Screening mammography"
    request.RequestedProcedureCodeSequence = [procedure]
    request.ScheduledProcedureStepID = "SPS42"
    study.RequestAttributesSequence = [request]
    return {slot: view_dataset(slot, spec, study, i) for i, slot in enumerate(SLOTS)}


def gaussian_saliency(
    rows: int, columns: int, cx: float, cy: float, sigma: float, *, per_map_pixel: float = 3.0
) -> SaliencyMap:
    """A Gaussian blob at stored (cx, cy), sigma in stored pixels, on a map grid about
    ``per_map_pixel`` stored pixels a pixel (the scorer's is 3.4 on a 3328 px wide detector
    image), peak 1."""
    h, w = max(1, round(rows / per_map_pixel)), max(1, round(columns / per_map_pixel))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # map pixel centres, edge origin
    xs, ys = xx * (columns / w), yy * (rows / h)  # the same points in stored units
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return SaliencyMap((blob / blob.max()).astype(np.float32), stored_shape=(rows, columns))


def demo_bundle(*, score_kind: str = "logit_difference", is_demo: bool = True) -> BundleInfo:
    threshold = 0.5 if score_kind == "probability" else 2.5
    return BundleInfo(
        name="mammo-demo" if is_demo else "mammo-ensemble",
        version="0.1.0",
        architecture="resnet18",
        is_demo=is_demo,
        score_kind=score_kind,
        device_uid="2.25.123456789012345678901234567890",
        operating_points=(OperatingPoint("recall", threshold, 0.85, 0.90),),
        manifest_sha256="ab" * 32,
    )


def roi_for(
    slot: Slot, rows: int, columns: int, centre: tuple[float, float] | None = None
) -> tuple[tuple[int, int, int, int], tuple[float, float]]:
    """ROI and COA: around ``centre`` if given, else inside the breast near the chest wall
    (mirrored for right breasts). Continuous coordinates, pixel centres at +0.5."""
    w, h = max(8, columns // 5), max(8, rows // 6)
    if centre is None:
        y0 = rows // 3 if slot.view is View.CC else rows // 2
        x0 = columns // 8 if slot.laterality is Laterality.L else columns - columns // 8 - w
        return (x0, y0, x0 + w, y0 + h), (x0 + w / 2 + 0.25, y0 + h / 2 - 0.25)
    cx, cy = centre
    x0 = int(min(max(0, round(cx - w / 2)), columns - w))
    y0 = int(min(max(0, round(cy - h / 2)), rows - h))
    return (x0, y0, x0 + w, y0 + h), (cx, cy)


def make_inference(
    sources: dict[Slot, Dataset],
    *,
    bundle: BundleInfo | None = None,
    scores: dict[Slot, float] | None = None,
    centres: dict[Slot, tuple[float, float]] | None = None,
) -> ExamInference:
    bundle = bundle or demo_bundle()
    probability = bundle.score_kind == "probability"
    default = {SLOTS[0]: 0.3, SLOTS[1]: 0.2, SLOTS[2]: 0.9, SLOTS[3]: 0.7}
    if not probability:
        default = {SLOTS[0]: -1.25, SLOTS[1]: 0.5, SLOTS[2]: 2.75, SLOTS[3]: 1.5}
    scores = scores or default
    views = {}
    for slot, ds in sources.items():
        rows, cols = int(ds.Rows), int(ds.Columns)
        roi, coa = roi_for(slot, rows, cols, (centres or {}).get(slot))
        s = scores[slot]
        views[slot] = ViewInference(
            sop_instance_uid=ds.SOPInstanceUID,
            slot=slot,
            holistic=s - 0.125,
            attention=s + 0.125,
            ensemble=s,
            coa=coa,
            roi=roi,
            saliency=gaussian_saliency(rows, cols, coa[0], coa[1], sigma=max(3.0, cols / 20)),
        )
    breast: dict[Laterality, float] = {}
    for lat in (Laterality.L, Laterality.R):
        values = [v.ensemble for s, v in views.items() if s.laterality is lat]
        if values:
            breast[lat] = float(sum(values))
    exam = max(breast.values())
    if probability:  # a calibrated bundle would map sums; keep numbers in 0..1 for the test
        breast = {lat: min(1.0, v / 2) for lat, v in breast.items()}
        exam = max(breast.values())
    verdicts = {p.name: exam >= p.threshold for p in bundle.operating_points}
    study_uid = next(iter(sources.values())).StudyInstanceUID
    return ExamInference(
        study_uid=study_uid,
        views=views,
        scores=ExamScores(breast_scores=breast, exam_score=exam),
        bundle=bundle,
        verdicts=verdicts,
    )


def synth_exam(
    rows: int = 256, columns: int = 208, *, seed: int = 3, monochrome1: bool = False
) -> tuple[dict[Slot, Dataset], ExamInference, dict[Slot, tuple[float, float]]]:
    """A synthetic screening-cancer exam (mammo_node.synth), its inference with the COA on the
    lesions, and the lesion centres (continuous coordinates) by view."""
    from mammo_node.synth import SynthOptions, generate_exams

    options = SynthOptions(
        rows=rows,
        columns=columns,
        seed=seed,
        exams=1,
        screening_fraction=1.0,
        interval_fraction=0.0,
        benign_fraction=0.0,
        monochrome1_fraction=1.0 if monochrome1 else 0.0,
    )
    exam = next(generate_exams(options))
    # synth truth has pixel centres at integers; the writers' coordinates have them at +0.5
    centres = {Slot.parse(t.slot): (t.x + 0.5, t.y + 0.5) for t in exam.truth if t.malignant}
    return exam.datasets, make_inference(exam.datasets, centres=centres), centres


# what OHIF 3.12 displays; it shows neither Mammography CAD SR nor GSPS (ohif-check README)
OHIF_KINDS = ("sr", "sr_view", "sc", "seg")


def write_outputs(
    folder: Path,
    exam: dict[Slot, Dataset],
    inference: ExamInference,
    *,
    revision: int = 1,
    kinds: tuple[str, ...] | None = None,
) -> list[Path]:
    """The exam's MG images and its result objects (``kinds`` only, if given) as Part-10 files."""
    from mammo_node.writers import build_outputs

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for slot, ds in exam.items():
        paths.append(folder / f"mg_{slot}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    for out in build_outputs(exam, inference, revision=revision):
        if kinds is not None and out.kind.value not in kinds:
            continue
        paths.append(folder / f"{out.kind}_{out.slot or 'exam'}.dcm")
        out.dataset.save_as(paths[-1], enforce_file_format=True)
    return paths


def write_scored_exam(
    folder: Path,
    *,
    rows: int = 256,
    columns: int = 208,
    seed: int = 3,
    revision: int = 1,
    kinds: tuple[str, ...] | None = None,
) -> list[Path]:
    """A synthetic exam's MG images and its result objects, as Part-10 files in ``folder``."""
    exam, inference, _ = synth_exam(rows, columns, seed=seed)
    return write_outputs(folder, exam, inference, revision=revision, kinds=kinds)
