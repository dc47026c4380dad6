"""The worklist's triage orders from an index: each exam's latest exam score and category

``exams.latest_exam_score`` and ``exams.latest_category`` hold the exam's latest result's
values (the worker sets them with each new result). Sorting the worklist by risk or category,
or keeping exams at or above a category, then walks an index and stops at the page's end,
instead of weighing every exam's latest result. Existing exams are backfilled from their
latest result.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_exams_triage_score", ["latest_exam_score", "last_received_at", "id"]),
    ("ix_exams_state_triage_score", ["state", "latest_exam_score", "last_received_at", "id"]),
    (
        "ix_exams_triage_category",
        ["latest_category", "latest_exam_score", "last_received_at", "id"],
    ),
    (
        "ix_exams_state_triage_category",
        ["state", "latest_category", "latest_exam_score", "last_received_at", "id"],
    ),
)
LATEST = "(SELECT max(r.id) FROM results r WHERE r.exam_fk = exams.id)"


def upgrade() -> None:
    # plain ALTER TABLE (no batch copy: the exams table is referenced by most others)
    op.add_column("exams", sa.Column("latest_exam_score", sa.Float(), nullable=True))
    op.add_column("exams", sa.Column("latest_category", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE exams SET "
        f"latest_exam_score = (SELECT exam_score FROM results WHERE results.id = {LATEST}), "
        f"latest_category = (SELECT category FROM results WHERE results.id = {LATEST})"
    )
    for name, columns in INDEXES:
        op.create_index(name, "exams", columns)


def downgrade() -> None:
    for name, _ in INDEXES:
        op.drop_index(name, table_name="exams")
    op.drop_column("exams", "latest_category")  # SQLite >= 3.35 drops a column in place
    op.drop_column("exams", "latest_exam_score")
