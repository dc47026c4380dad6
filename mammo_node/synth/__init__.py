"""Synthetic screening exams with lesions of known position, and wrappers that turn public
real images (NYU, mini-MIAS) into DICOM: the test, demo and benchmark data the node is fed.

``generator`` makes exams; ``wrap`` wraps real images. The names below are the public API.
"""

from mammo_node.synth.generator import (
    FULL_SIZE_LARGE,
    FULL_SIZE_SMALL,
    LABEL_COLUMNS,
    MG_FOR_PRESENTATION,
    TRUTH_COLUMNS,
    LesionTruth,
    PatientIdentity,
    StudyIdentity,
    SynthError,
    SynthExam,
    SynthOptions,
    code_item,
    generate_exam,
    generate_exams,
    make_uid,
    mg_for_presentation_dataset,
    patient_anatomy,
    patient_orientation,
    patient_study_series,
    plan_exams,
    with_file_meta,
    write_synthetic_dataset,
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
