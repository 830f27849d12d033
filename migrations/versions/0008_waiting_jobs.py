"""Job status waiting: a round whose inference shards are out on other workers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("queued", "running", "succeeded", "failed", "cancelled")
NEW = (*OLD, "waiting")


def _in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _replace_check(values: tuple[str, ...]) -> None:
    # Batch mode (SQLite recreates the table); the name follows the naming convention ck_%(table)s_%(name)s.
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_jobs_status"), _in(values))


def upgrade() -> None:
    _replace_check(NEW)


def downgrade() -> None:
    # A waiting round has no place in the old schema: it ends failed with the reason; its shards stay.
    op.execute(
        "UPDATE jobs SET status = 'failed', error = COALESCE(error, 'schema downgraded while its "
        "inference shards were out') WHERE status = 'waiting'"
    )
    _replace_check(OLD)
