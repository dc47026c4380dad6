"""QIDO-RS and the worklist answered from indexed columns (a large database)

Columns for what QIDO-RS returns by default and used to read from a stored header (Study ID,
Referring Physician's Name, Timezone Offset, Performed Procedure Step start, Bits Allocated,
Number of Frames), the Patient Orientation the exam page hangs views by, and the case-folded
PatientName QIDO matches on; indexes for every attribute it matches (PatientID with its
issuer, PatientName, StudyDate, AccessionNumber, StudyDescription, Modality, SOP Class UID)
and for the worklist's order.

Existing rows are backfilled: the folded name from the row, the header attributes from the
stored files when the node runs the migration (``upgrade(url, storage_dir=...)``, as ``serve``
and ``db upgrade`` do). A row whose file is not there keeps NULL; QIDO and the exam page
then read its header.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")
PATTERN = "varchar_pattern_ops"
BATCH = 2000

exams = sa.table(
    "exams",
    sa.column("id", sa.Integer),
    sa.column("patient_name", sa.String),
    sa.column("patient_name_folded", sa.String),
    sa.column("study_id", sa.String),
    sa.column("referring_physician_name", sa.String),
    sa.column("timezone_offset", sa.String),
)
series = sa.table(
    "series",
    sa.column("id", sa.Integer),
    sa.column("pps_start_date", sa.String),
    sa.column("pps_start_time", sa.String),
)
instances = sa.table(
    "instances",
    sa.column("id", sa.Integer),
    sa.column("exam_fk", sa.Integer),
    sa.column("series_fk", sa.Integer),
    sa.column("rel_path", sa.String),
    sa.column("pruned_at", sa.DateTime),
    sa.column("bits_allocated", sa.Integer),
    sa.column("number_of_frames", sa.Integer),
    sa.column("patient_orientation", sa.String),
)
INDEXES: list[tuple[str, str, list[str], dict[str, str]]] = [
    (
        "ix_patients_patient_id_issuer",
        "patients",
        ["patient_id", "issuer"],
        {"patient_id": PATTERN},
    ),
    ("ix_exams_study_date", "exams", ["study_date"], {}),
    ("ix_exams_accession_number", "exams", ["accession_number"], {"accession_number": PATTERN}),
    (
        "ix_exams_patient_name_folded",
        "exams",
        ["patient_name_folded"],
        {"patient_name_folded": PATTERN},
    ),
    (
        "ix_exams_study_description",
        "exams",
        ["study_description"],
        {"study_description": PATTERN},
    ),
    ("ix_exams_last_received_at", "exams", ["last_received_at", "id"], {}),
    ("ix_series_modality_exam", "series", ["modality", "exam_fk"], {}),
    ("ix_instances_sop_class_uid", "instances", ["sop_class_uid"], {}),
]


def upgrade() -> None:
    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "patient_name_folded", sa.String(length=324), nullable=False, server_default=""
            )
        )
        batch_op.add_column(sa.Column("study_id", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("referring_physician_name", sa.String(length=324), nullable=True)
        )
        batch_op.add_column(sa.Column("timezone_offset", sa.String(length=16), nullable=True))
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pps_start_date", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("pps_start_time", sa.String(length=32), nullable=True))
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bits_allocated", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("number_of_frames", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("patient_orientation", sa.String(length=32), nullable=True))
    _fold_names()
    storage = context.config.attributes.get("storage_dir")
    if storage:
        _from_headers(Path(storage))
    for name, table, columns, ops in INDEXES:
        op.create_index(name, table, columns, postgresql_ops=ops)


def downgrade() -> None:
    for name, table, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("patient_orientation")
        batch_op.drop_column("number_of_frames")
        batch_op.drop_column("bits_allocated")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_column("pps_start_time")
        batch_op.drop_column("pps_start_date")
    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.drop_column("timezone_offset")
        batch_op.drop_column("referring_physician_name")
        batch_op.drop_column("study_id")
        batch_op.drop_column("patient_name_folded")


def _batches(rows: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _update(table: Any, values: list[dict[str, Any]]) -> None:
    if not values:
        return
    names = [k for k in values[0] if k != "row_id"]
    statement = (
        table.update()
        .where(table.c.id == sa.bindparam("row_id"))
        .values({n: sa.bindparam(f"new_{n}") for n in names})
    )  # bind names differ from the columns' (SQLAlchemy reserves those for SET)
    op.get_bind().execute(
        statement, [{(k if k == "row_id" else f"new_{k}"): v for k, v in r.items()} for r in values]
    )


def _fold_names() -> None:
    """The folded name the node writes at ingest (str.lower, Unicode-aware, like fold_name)."""
    rows = op.get_bind().execute(sa.select(exams.c.id, exams.c.patient_name)).all()
    for batch in _batches(iter(rows)):
        _update(
            exams,
            [{"row_id": i, "patient_name_folded": (n or "").lower()} for i, n in batch if n],
        )


def _header(path: Path) -> Any:
    from pydicom import dcmread

    try:
        return dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=[
                "StudyID",
                "ReferringPhysicianName",
                "TimezoneOffsetFromUTC",
                "PerformedProcedureStepStartDate",
                "PerformedProcedureStepStartTime",
                "BitsAllocated",
                "NumberOfFrames",
                "PatientOrientation",
            ],
        )
    except Exception:  # a file pydicom cannot read: the row keeps NULL, QIDO reads it later
        logger.warning("0009: cannot read the header of %s", path.name)
        return None


def _text(ds: Any, keyword: str, limit: int) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)[:limit]


def _number(ds: Any, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _from_headers(storage: Path) -> None:
    """Study, series and instance attributes from each stored file (headers only)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(instances.c.id, instances.c.exam_fk, instances.c.series_fk, instances.c.rel_path)
        .where(instances.c.pruned_at.is_(None))
        .order_by(instances.c.id)
    ).all()
    logger.info("0009: reading %d stored headers", len(rows))
    seen_exams: set[int] = set()
    seen_series: set[int] = set()
    for batch in _batches(iter(rows)):
        exam_values, series_values, instance_values = [], [], []
        for row_id, exam_fk, series_fk, rel_path in batch:
            path = storage / rel_path
            if not path.is_file():
                continue
            ds = _header(path)
            if ds is None:
                continue
            instance_values.append(
                {
                    "row_id": row_id,
                    "bits_allocated": _number(ds, "BitsAllocated"),
                    "number_of_frames": _number(ds, "NumberOfFrames"),
                    "patient_orientation": "\\".join(
                        str(v) for v in (ds.get("PatientOrientation") or [])
                    )[:32],
                }
            )
            if exam_fk not in seen_exams:  # the study's attributes as first filed
                seen_exams.add(exam_fk)
                exam_values.append(
                    {
                        "row_id": exam_fk,
                        "study_id": _text(ds, "StudyID", 16),
                        "referring_physician_name": _text(ds, "ReferringPhysicianName", 324),
                        "timezone_offset": _text(ds, "TimezoneOffsetFromUTC", 16),
                    }
                )
            if series_fk not in seen_series:
                seen_series.add(series_fk)
                series_values.append(
                    {
                        "row_id": series_fk,
                        "pps_start_date": _text(ds, "PerformedProcedureStepStartDate", 8),
                        "pps_start_time": _text(ds, "PerformedProcedureStepStartTime", 32),
                    }
                )
        _update(instances, instance_values)
        _update(exams, exam_values)
        _update(series, series_values)
