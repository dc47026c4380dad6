"""Shadow results that failed: the shadow scoring process died or raised on that exam

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shadow_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure", sa.String(length=500), nullable=True))
        batch_op.alter_column("exam_score", existing_type=sa.Double(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM shadow_results WHERE exam_score IS NULL")
    with op.batch_alter_table("shadow_results", schema=None) as batch_op:
        batch_op.alter_column("exam_score", existing_type=sa.Double(), nullable=False)
        batch_op.drop_column("failure")
