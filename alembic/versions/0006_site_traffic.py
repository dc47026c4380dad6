"""site traffic: object kind and selection facts, each exam's own patient attributes,
instance conflicts kept aside by the overwrite policy, the selection behind each result

Revision ID: 0006_site_traffic
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EXAM_PATIENT = (
    ("patient_name", 324, "name"),
    ("patient_birth_date", 8, "birth_date"),
    ("patient_sex", 16, "sex"),
    ("patient_age", 4, None),
)


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="image")
        )
        batch_op.add_column(sa.Column("facts", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("exams", schema=None) as batch_op:
        for column, length, _ in _EXAM_PATIENT:
            batch_op.add_column(
                sa.Column(column, sa.String(length=length), nullable=False, server_default="")
            )
    # existing exams keep the attributes their patient row holds now
    for column, _, source in _EXAM_PATIENT:
        if source:
            op.execute(
                f"UPDATE exams SET {column} = (SELECT patients.{source} FROM patients "
                "WHERE patients.id = exams.patient_fk)"
            )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("selection", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "instance_conflicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exam_fk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("rel_path", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("peer_host", sa.String(length=255), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["exam_fk"], ["exams.id"], name=op.f("fk_instance_conflicts_exam_fk_exams")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_conflicts")),
    )
    with op.batch_alter_table("instance_conflicts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_conflicts_exam_fk"), ["exam_fk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_instance_conflicts_sop_instance_uid"),
            ["sop_instance_uid"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("instance_conflicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_conflicts_sop_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_instance_conflicts_exam_fk"))
    op.drop_table("instance_conflicts")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("selection")
    with op.batch_alter_table("exams", schema=None) as batch_op:
        for column, _, _ in reversed(_EXAM_PATIENT):
            batch_op.drop_column(column)
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("facts")
        batch_op.drop_column("kind")
