"""Pair sanity check: cases.pair_check_score / pair_check_reason / pair_status, queue kind pair-check

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAIR_STATUSES = ("ok", "suspect", "confirmed", "rejected")
OLD_KINDS = ("label", "second_read", "relabel", "adjudication")
NEW_KINDS = (*OLD_KINDS, "pair-check")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _replace_kind_check(values: tuple[str, ...]) -> None:
    # Batch mode (SQLite recreates the table); the name follows the naming convention ck_%(table)s_%(name)s.
    with op.batch_alter_table("queue_items") as batch_op:
        batch_op.drop_constraint(op.f("ck_queue_items_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_queue_items_kind"), _in("kind", values))


def upgrade() -> None:
    # All nullable: NULL pair_status means "not checked yet", which every existing case is.
    with op.batch_alter_table("cases") as batch_op:
        batch_op.add_column(sa.Column("pair_check_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("pair_check_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("pair_status", sa.String(length=16), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_cases_pair_status"), f"pair_status IS NULL OR {_in('pair_status', PAIR_STATUSES)}"
        )
    _replace_kind_check(NEW_KINDS)


def downgrade() -> None:
    # Pair-check items have no place in the old schema; they are removed with the columns they answer.
    op.execute("DELETE FROM queue_items WHERE kind = 'pair-check'")
    _replace_kind_check(OLD_KINDS)
    with op.batch_alter_table("cases") as batch_op:
        batch_op.drop_constraint(op.f("ck_cases_pair_status"), type_="check")
        batch_op.drop_column("pair_status")
        batch_op.drop_column("pair_check_reason")
        batch_op.drop_column("pair_check_score")
