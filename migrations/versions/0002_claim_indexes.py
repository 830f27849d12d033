"""Indexes for claiming at a million queue rows (measured by bench/bench_queue.py)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queue_items") as batch_op:
        batch_op.drop_index("ix_queue_items_claim")
        batch_op.create_index("ix_queue_items_claim", ["status", sa.text("priority DESC"), "id"], unique=False)
        batch_op.create_index("ix_queue_items_case_id", ["case_id"], unique=False)
    with op.batch_alter_table("labels") as batch_op:
        batch_op.create_index("ix_labels_labeller_case_id", ["labeller", "case_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch_op:
        batch_op.drop_index("ix_labels_labeller_case_id")
    with op.batch_alter_table("queue_items") as batch_op:
        batch_op.drop_index("ix_queue_items_case_id")
        batch_op.drop_index("ix_queue_items_claim")
        batch_op.create_index("ix_queue_items_claim", ["status", "priority", "id"], unique=False)
