"""operations: pruned instances, retention holds, scanner and bundle hash on results, outcomes,
installed model bundles and shadow results

Revision ID: 0005_operations
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retention_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("retention_hold_reason", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bundle_sha256", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("manufacturer", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("manufacturer_model", sa.String(length=64), nullable=False, server_default="")
        )
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exam_fk", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("cancer_laterality", sa.String(length=1), nullable=False),
        sa.Column("readers", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["exam_fk"], ["exams.id"], name=op.f("fk_outcomes_exam_fk_exams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcomes")),
        sa.UniqueConstraint("exam_fk", name=op.f("uq_outcomes_exam_fk")),
    )
    op.create_table(
        "model_bundles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("is_demo", sa.Boolean(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_bundles")),
        sa.UniqueConstraint("manifest_sha256", name=op.f("uq_model_bundles_manifest_sha256")),
    )
    op.create_table(
        "shadow_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exam_fk", sa.Integer(), nullable=False),
        sa.Column("exam_revision", sa.Integer(), nullable=False),
        sa.Column("active_result_fk", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("bundle_sha256", sa.String(length=64), nullable=False),
        sa.Column("exam_score", sa.Double(), nullable=False),
        sa.Column("breast_scores", sa.JSON(), nullable=False),
        sa.Column("images", sa.JSON(), nullable=False),
        sa.Column("verdicts", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["exam_fk"], ["exams.id"], name=op.f("fk_shadow_results_exam_fk_exams")
        ),
        sa.ForeignKeyConstraint(
            ["active_result_fk"],
            ["results.id"],
            name=op.f("fk_shadow_results_active_result_fk_results"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_results")),
        sa.UniqueConstraint(
            "exam_fk", "exam_revision", "bundle_sha256", name="uq_shadow_results_exam_bundle"
        ),
    )


def downgrade() -> None:
    op.drop_table("shadow_results")
    op.drop_table("model_bundles")
    op.drop_table("outcomes")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("manufacturer_model")
        batch_op.drop_column("manufacturer")
        batch_op.drop_column("bundle_sha256")
    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.drop_column("retention_hold_reason")
        batch_op.drop_column("retention_hold")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("pruned_at")
