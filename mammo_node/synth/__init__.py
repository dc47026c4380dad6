"""Synthetic screening exams with lesions of known position, and wrappers that turn public
real images (NYU, mini-MIAS) into DICOM: the test, demo and benchmark data the node is fed.

Split by what each module makes: ``options`` (what to generate, what comes back),
``identifiers`` (seeded UIDs), ``anatomy`` (breasts and findings), ``rendering`` (pixels),
``dataset`` (the MG DICOM dataset), ``exams`` (one 4-view exam), ``cohort`` (plans, files and
label CSVs); ``wrap`` wraps real images. The names below are the public API.
"""

from mammo_node.synth.anatomy import patient_anatomy
from mammo_node.synth.cohort import (
    LABEL_COLUMNS,
    TRUTH_COLUMNS,
    SynthSummary,
    generate_exams,
    plan_exams,
    write_synthetic_dataset,
)
from mammo_node.synth.dataset import (
    MG_FOR_PRESENTATION,
    code_item,
    mg_for_presentation_dataset,
    patient_orientation,
    patient_study_series,
    with_file_meta,
)
from mammo_node.synth.exams import generate_exam
from mammo_node.synth.identifiers import make_uid
from mammo_node.synth.options import (
    FULL_SIZE_LARGE,
    FULL_SIZE_SMALL,
    LesionTruth,
    PatientIdentity,
    StudyIdentity,
    SynthError,
    SynthExam,
    SynthOptions,
)

__all__ = [
    "FULL_SIZE_LARGE",
    "FULL_SIZE_SMALL",
    "LABEL_COLUMNS",
    "MG_FOR_PRESENTATION",
    "TRUTH_COLUMNS",
    "LesionTruth",
    "PatientIdentity",
    "StudyIdentity",
    "SynthError",
    "SynthExam",
    "SynthOptions",
    "SynthSummary",
    "code_item",
    "generate_exam",
    "generate_exams",
    "make_uid",
    "mg_for_presentation_dataset",
    "patient_anatomy",
    "patient_orientation",
    "patient_study_series",
    "plan_exams",
    "with_file_meta",
    "write_synthetic_dataset",
]
