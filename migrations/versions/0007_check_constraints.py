"""CHECK constraint on rounds.status: the one enumerated status the models promised it for and lacked

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every status workbench.rounds writes (open at creation, running, labelling, failed, did_not_learn).
ROUND_STATUSES = ("open", "running", "labelling", "failed", "did_not_learn")


def upgrade() -> None:
    # Batch mode (SQLite recreates the table); the name follows the naming convention ck_%(table)s_%(name)s.
    statuses = ", ".join(repr(v) for v in ROUND_STATUSES)
    with op.batch_alter_table("rounds") as batch_op:
        batch_op.create_check_constraint(op.f("ck_rounds_status"), f"status IN ({statuses})")


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch_op:
        batch_op.drop_constraint(op.f("ck_rounds_status"), type_="check")
