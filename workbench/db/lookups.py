"""Lookups of a row by id that every layer shares, with the one error message for a missing row.

``workbench evaluate 999`` and ``workbench promote 999`` alike answer ``no model version 999``: the
wording lives here once instead of beside every ``session.get``.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from workbench.db.models import ModelVersion
from workbench.errors import NotFoundError


def get_version(session: Session, version_id: int) -> ModelVersion:
    """The model version row ``version_id``; NotFoundError ``no model version <id>`` when there is none."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFoundError(f"no model version {version_id}")
    return version
