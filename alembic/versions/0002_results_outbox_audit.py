"""scoring results, destinations, outbox, audit events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)

    op.create_table(
        "destinations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("tls", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destinations")),
        sa.UniqueConstraint("name", name=op.f("uq_destinations_name")),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exam_fk", sa.Integer(), nullable=False),
        sa.Column("exam_revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("model_is_demo", sa.Boolean(), nullable=False),
        sa.Column("score_kind", sa.String(length=32), nullable=False),
        sa.Column("exam_score", sa.Double(), nullable=False),
        sa.Column("breast_scores", sa.JSON(), nullable=False),
        sa.Column("images", sa.JSON(), nullable=False),
        sa.Column("verdicts", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("previous_result_fk", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["exam_fk"], ["exams.id"], name=op.f("fk_results_exam_fk_exams")),
        sa.ForeignKeyConstraint(
            ["previous_result_fk"],
            ["results.id"],
            name=op.f("fk_results_previous_result_fk_results"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
    )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_results_exam_fk"), ["exam_fk"], unique=False)
        batch_op.create_index(
            "ix_results_exam_revision", ["exam_fk", "exam_revision"], unique=False
        )

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_fk", sa.Integer(), nullable=False),
        sa.Column("destination_fk", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.ForeignKeyConstraint(
            ["destination_fk"],
            ["destinations.id"],
            name=op.f("fk_outbox_destination_fk_destinations"),
        ),
        sa.ForeignKeyConstraint(
            ["instance_fk"], ["instances.id"], name=op.f("fk_outbox_instance_fk_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("instance_fk", "destination_fk", name="uq_outbox_instance_destination"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_destination_fk"), ["destination_fk"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outbox_instance_fk"), ["instance_fk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outbox_state"), ["state"], unique=False)

    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("claimed_by", sa.String(length=128), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=False, server_default=""))

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_fk", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("output_kind", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.create_index(batch_op.f("ix_instances_result_fk"), ["result_fk"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_instances_result_fk_results"), "results", ["result_fk"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_instances_result_fk_results"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_instances_result_fk"))
        batch_op.drop_column("output_kind")
        batch_op.drop_column("result_fk")

    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.drop_column("last_error")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("attempts")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_state"))
        batch_op.drop_index(batch_op.f("ix_outbox_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_outbox_instance_fk"))
        batch_op.drop_index(batch_op.f("ix_outbox_destination_fk"))

    op.drop_table("outbox")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_index("ix_results_exam_revision")
        batch_op.drop_index(batch_op.f("ix_results_exam_fk"))

    op.drop_table("results")
    op.drop_table("destinations")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_action"))

    op.drop_table("audit_events")
