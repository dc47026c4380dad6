"""Exception and warning text reaches logs and answers without the values it quotes."""

from __future__ import annotations

import io
import logging

from pydicom import config
from pydicom.dataelem import DataElement

from mammo_node.scrub import ScrubbingFormatter, describe, format_exception, scrub

SECRET = "ZZSECRET^WILHELMINA"


def test_quoted_values_ids_and_database_details_are_removed() -> None:
    text = (
        "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"uq_patients_patient_key"\nDETAIL:  Key (patient_key)=(PID778899\\) already exists.\n'
        f"[parameters: {{'name': '{SECRET}'}}] birth 19211231"
    )
    cleaned = scrub(text)
    assert "UniqueViolation" in cleaned and "unique constraint" in cleaned
    for secret in ("PID778899", SECRET, "19211231"):
        assert secret not in cleaned
    uid = "1.2.826.0.1.3680043.8.498.123456789012"
    assert uid in scrub(f"SOPInstanceUID {uid} differs")  # UIDs are not patient data
    assert describe(ValueError(f"could not convert string to float: '{SECRET}'")) == (
        "ValueError: could not convert string to float: '…'"
    )


def test_log_records_of_pydicom_and_tracebacks_are_scrubbed() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ScrubbingFormatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    mode = config.settings.reading_validation_mode
    try:
        config.settings.reading_validation_mode = config.WARN
        logging.captureWarnings(True)
        DataElement(0x00100030, "DA", SECRET, validation_mode=config.WARN)  # pydicom warns
        try:
            float(SECRET)
        except ValueError:
            logging.getLogger("mammo_node.test").exception("scoring failed")
    finally:
        config.settings.reading_validation_mode = mode
        logging.captureWarnings(False)
        root.removeHandler(handler)
    out = stream.getvalue()
    assert "Invalid value for VR DA" in out and "scoring failed" in out and "Traceback" in out
    assert SECRET not in out and "WILHELMINA" not in out
    try:
        raise RuntimeError("wrapped") from KeyError(SECRET)
    except RuntimeError as exc:
        assert SECRET not in format_exception(exc) and "KeyError" in format_exception(exc)
