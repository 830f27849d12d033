"""At most one active round job: a partial unique index makes the exclusive-kind check atomic

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_jobs_one_active_round"
STATUSES = "('queued', 'running', 'waiting')"
ACTIVE = f"kind = 'round' AND status IN {STATUSES}"


def upgrade() -> None:
    # Two active rounds could exist before this guard (the check-then-insert race it closes): the
    # oldest one stays, later ones end failed with the reason, or the unique index could not be built.
    op.execute(
        "UPDATE jobs SET status = 'failed', finished_at = CURRENT_TIMESTAMP, error = 'ended by schema "
        "upgrade 0009: another round job was already queued or running (rounds never overlap)' "
        f"WHERE {ACTIVE} AND id > (SELECT MIN(j.id) FROM jobs j WHERE j.kind = 'round' AND j.status IN {STATUSES})"
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index(
            INDEX, ["kind"], unique=True, sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index(INDEX, sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))
