"""Synthetic screening exams with known lesions, written as MG For Presentation DICOM.

Each exam is the four screening views (L-CC, L-MLO, R-CC, R-MLO) of one woman, rendered from a
seeded breast phantom: a breast outline from the chest wall, a skin line and a smooth fall-off at
the edge, fibroglandular texture whose structures run towards the nipple, a pectoral muscle on
the MLO views and near-zero air around the breast. Screening cancers show one lesion in both
views of the affected breast (same distance from the nipple in CC and MLO); interval cancers
show at most a faint one; normals none (a few carry a benign nodule).

Images are rendered in a *canonical* frame with the chest wall at column 0 (as a left breast is
stored) and right breasts are mirrored, as a detector stores them, so the chest wall of a right
breast is at the last column. Every coordinate written to the ground truth is in the stored
pixel grid of the file as written: x = column, y = row, pixel centres at integers.

Everything is deterministic for a seed: the same options give the same pixels and UIDs. A
patient's anatomy depends only on the seed and the patient ID, so a woman's two exams look
alike (which is why cross-validation must group by patient).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

import numpy as np
from pydicom.dataset import Dataset

from mammo_node.domain import SLOTS, Laterality, Slot, View
from mammo_node.synth.anatomy import (
    BreastAnatomy,
    _Finding,
    _Geometry,
    _geometry,
    _place_findings,
    density_category,
    patient_anatomy,
)
from mammo_node.synth.dataset import _acquisition, mg_for_presentation_dataset
from mammo_node.synth.identifiers import _seeded_rng, make_uid
from mammo_node.synth.options import (
    OUTCOMES,
    LesionTruth,
    PatientIdentity,
    StudyIdentity,
    SynthError,
    SynthExam,
    SynthOptions,
)
from mammo_node.synth.rendering import encode_pixels, render_view

logger = logging.getLogger(__name__)


def generate_exam(
    rng: np.random.Generator,
    *,
    options: SynthOptions,
    patient_id: str,
    outcome: str,
    cancer_laterality: str,
    study_date: dt.date,
    photometric: str | None = None,
    bits_stored: int | None = None,
) -> SynthExam:
    """One 4-view exam. Anatomy comes from (seed, patient_id); everything else from ``rng``."""
    if outcome not in OUTCOMES:
        raise SynthError(f'Argument "outcome" should be one of {OUTCOMES}; got "{outcome}".')
    if (outcome == "normal") != (cancer_laterality == ""):
        raise SynthError(
            f'Argument "cancer_laterality" should be "L" or "R" for a cancer and "" for a '
            f'normal exam; got "{cancer_laterality}" for "{outcome}".'
        )
    if photometric is None:
        mono1 = rng.uniform() < options.monochrome1_fraction
        photometric = "MONOCHROME1" if mono1 else "MONOCHROME2"
    if bits_stored is None:
        bits_stored = int(rng.choice(options.bits_stored))
    anatomy = patient_anatomy(options.seed, patient_id)
    patient = _patient_identity(options.seed, patient_id)
    study = StudyIdentity(
        study_uid=make_uid("study", options.seed, patient_id, study_date.isoformat()),
        date=study_date.strftime("%Y%m%d"),
        time=f"{int(rng.integers(8, 17)):02d}{int(rng.integers(0, 60)):02d}00",
        accession=f"SA{int(rng.integers(10**7, 10**8))}",
    )
    findings = _exam_findings(rng, options, anatomy, outcome, cancer_laterality)
    datasets: dict[Slot, Dataset] = {}
    truth: list[LesionTruth] = []
    thickness_mm = {side: float(rng.uniform(35, 75)) for side in Laterality}
    for number, slot in enumerate(SLOTS, start=1):
        view_findings = tuple(f[slot.view] for f in findings[slot.laterality])
        pixels, window = _render_slot(
            rng, options, slot, anatomy[slot.laterality], view_findings, bits_stored, photometric
        )
        sop_uid = make_uid("image", study.study_uid, slot)
        compressed = thickness_mm[slot.laterality] * (1.08 if slot.view is View.MLO else 1.0)
        datasets[slot] = mg_for_presentation_dataset(
            pixels,
            slot=slot,
            patient=patient,
            study=study,
            series_uid=make_uid("series", study.study_uid, slot),
            sop_instance_uid=sop_uid,
            series_number=number,
            bits_stored=bits_stored,
            photometric=photometric,
            pixel_spacing_mm=options.pixel_spacing_mm,
            window=window,
            extra={
                **_acquisition(rng, slot, compressed),
                "SeriesDescription": f"{slot.laterality.value} {slot.view.value}",
            },
        )
        for f in view_findings:
            x = options.columns - 1 - f.x if slot.laterality is Laterality.R else f.x
            truth.append(
                LesionTruth(
                    sop_uid,
                    study.study_uid,
                    patient_id,
                    str(slot),
                    round(x, 2),
                    round(f.y, 2),
                    round(f.radius, 2),
                    f.kind,
                )
            )
    scores = _reader_scores(rng, outcome, cancer_laterality, findings)
    logger.debug("synthetic exam %s: %s, %d findings", study.study_uid, outcome, len(truth))
    return SynthExam(
        patient_id=patient_id,
        study_uid=study.study_uid,
        outcome=outcome,
        cancer_laterality=cancer_laterality,
        datasets=datasets,
        truth=truth,
        study_date=study.date,
        reader_scores=scores,
        density=density_category(anatomy[Laterality.L].density),
    )


def _render_slot(
    rng: np.random.Generator,
    options: SynthOptions,
    slot: Slot,
    anatomy: BreastAnatomy,
    findings: tuple[_Finding, ...],
    bits_stored: int,
    photometric: str,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored pixels and window of one view; right breasts mirrored as a detector stores them."""
    att = render_view(
        anatomy,
        slot.view,
        options.rows,
        options.columns,
        findings=findings,
        pixel_mm=options.pixel_spacing_mm,
    )
    if slot.laterality is Laterality.R:
        att = att[:, ::-1]
    return encode_pixels(att, rng=rng, bits_stored=bits_stored, photometric=photometric)


def _patient_identity(seed: int, patient_id: str) -> PatientIdentity:
    rng = _seeded_rng("identity", seed, patient_id)
    born = dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20 * 365)))
    number = patient_id.rsplit("-", 1)[-1]
    return PatientIdentity(patient_id, f"SYNTHETIC^PATIENT{number}", born.strftime("%Y%m%d"))


def _exam_findings(
    rng: np.random.Generator,
    options: SynthOptions,
    anatomy: Mapping[Laterality, BreastAnatomy],
    outcome: str,
    cancer_laterality: str,
) -> dict[Laterality, list[dict[View, _Finding]]]:
    """Findings per breast, each seen in both views."""
    pixel_mm = options.pixel_spacing_mm
    found: dict[Laterality, list[dict[View, _Finding]]] = {side: [] for side in Laterality}

    def geometries(side: Laterality) -> dict[View, _Geometry]:
        return {v: _geometry(anatomy[side], v, options.rows, options.columns) for v in View}

    radius_mm = float(rng.uniform(*options.lesion_radius_mm))
    if outcome == "screening" or (
        outcome == "interval" and rng.uniform() < options.interval_visible_fraction
    ):
        side = Laterality(cancer_laterality)
        contrast = options.lesion_contrast
        if outcome == "interval":
            kind, contrast = "subtle_mass", contrast * options.interval_contrast_factor
            radius_mm *= 0.8
        elif rng.uniform() < options.calcification_only_fraction:
            kind = "calcification_cluster"
        elif rng.uniform() < options.spiculated_fraction:
            kind = "spiculated_mass"
        else:
            kind = "mass"
        found[side].append(
            _place_findings(
                rng, geometries(side), kind=kind, radius_px=radius_mm / pixel_mm, contrast=contrast
            )
        )
    for side in Laterality:
        if side.value != cancer_laterality and rng.uniform() < options.benign_fraction:
            benign_mm = float(rng.uniform(3.0, 6.0))
            found[side].append(
                _place_findings(
                    rng,
                    geometries(side),
                    kind="benign_nodule",
                    radius_px=benign_mm / pixel_mm,
                    contrast=0.5 * options.lesion_contrast,
                )
            )
    return found


def _reader_scores(
    rng: np.random.Generator,
    outcome: str,
    cancer_laterality: str,
    findings: Mapping[Laterality, list[dict[View, _Finding]]],
) -> dict[str, int]:
    """Two readers' suspicion 1-5 per breast, correlated with the truth and with each other."""
    scores: dict[str, int] = {}
    for side in Laterality:
        cancer = side.value == cancer_laterality
        if cancer and outcome == "screening":
            base = 3.6
        elif cancer:
            base = 1.8 if findings[side] else 1.3
        elif findings[side]:
            base = 2.2
        else:
            base = 1.0
        shared = rng.normal(0.0, 0.6)
        for reader in (1, 2):
            latent = base + shared + rng.normal(0.0, 0.5)
            scores[f"reader{reader}_{side.value}"] = int(np.clip(round(latent), 1, 5))
    return scores
