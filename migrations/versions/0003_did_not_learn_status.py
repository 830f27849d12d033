"""Model status did_not_learn: trained and saved, but the learning check failed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("queued", "training", "ready", "failed", "cancelled")
NEW = (*OLD, "did_not_learn")


def _in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _replace_check(values: tuple[str, ...]) -> None:
    # Batch mode (SQLite recreates the table); the name follows the naming convention ck_%(table)s_%(name)s.
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_constraint(op.f("ck_model_versions_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_model_versions_status"), _in(values))


def upgrade() -> None:
    _replace_check(NEW)


def downgrade() -> None:
    # A did_not_learn version has no place in the old schema: it becomes failed, keeping its reasons.
    op.execute(
        "UPDATE model_versions SET status = 'failed', error = COALESCE(error, 'did not learn') "
        "WHERE status = 'did_not_learn'"
    )
    _replace_check(OLD)
