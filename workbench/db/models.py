"""SQLAlchemy 2.x ORM models: the database is the source of truth for every object of the workbench.

Conventions: integer surrogate keys, timezone-aware UTC timestamps, JSON columns for structured
reports, CHECK constraints for every enumerated status so a bad value can never be stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from workbench.defaults import SPLITS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LABEL_SOURCES = ("import", "expert", "adjudication", "correction", "simulation")
# did_not_learn: trained and saved, but the learning check failed (never used downstream)
MODEL_STATUSES = ("queued", "training", "ready", "failed", "cancelled", "did_not_learn")
# waiting (0008): a round whose inference shards run as their own jobs on other workers
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "waiting")
# The rows uq_jobs_one_active_round covers: an active (queued, running, waiting) job of an exclusive
# kind (``jobs.kinds``: round). A new exclusive kind needs a migration that widens it.
ACTIVE_EXCLUSIVE_JOBS = "kind = 'round' AND status IN ('queued', 'running', 'waiting')"
# open: created; running: its steps run; labelling: its batch is queued; failed; did_not_learn (0007)
ROUND_STATUSES = ("open", "running", "labelling", "failed", "did_not_learn")
QUEUE_STATUSES = ("queued", "leased", "done", "cancelled")
# Items still waiting for an answer (at most one per case and kind: uq_queue_items_open_case_kind)
OPEN_QUEUE_STATUSES = ("queued", "leased")
# pair-check: an expert says whether a pair flagged by workbench.data.pair_check is sound (no label)
PAIR_CHECK_KIND = "pair-check"
QUEUE_KINDS = ("label", "second_read", "relabel", "adjudication", PAIR_CHECK_KIND)
# Pair sanity check status of a case; NULL = not checked yet
PAIR_STATUSES = ("ok", "suspect", "confirmed", "rejected")
ROLES = ("labeller", "admin")


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with the naming convention Alembic needs for batch (SQLite) migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ImportBatch(Base):
    """One run of ``workbench import``: where it came from and what it did."""

    __tablename__ = "import_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    requester: Mapped[str] = mapped_column(String(128), default="cli")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    report_path: Mapped[str | None] = mapped_column(Text)


class Case(Base):
    """A pair of images (pre- and post-stain) of one cervix. Images stay on disk; the split is frozen."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(_in("split", SPLITS), name="split"),
        CheckConstraint(f"pair_status IS NULL OR {_in('pair_status', PAIR_STATUSES)}", name="pair_status"),
        UniqueConstraint("pair_sha256", name="uq_cases_pair_sha256"),
        Index("ix_cases_split_id", "split", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(256), unique=True)
    patient_id: Mapped[str] = mapped_column(String(256), index=True)
    pre_path: Mapped[str] = mapped_column(Text)
    post_path: Mapped[str] = mapped_column(Text)
    pre_sha256: Mapped[str] = mapped_column(String(64))
    post_sha256: Mapped[str] = mapped_column(String(64))
    pair_sha256: Mapped[str] = mapped_column(String(64))
    pre_width: Mapped[int] = mapped_column(Integer)
    pre_height: Mapped[int] = mapped_column(Integer)
    post_width: Mapped[int] = mapped_column(Integer)
    post_height: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(8))
    import_batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # De-identified facts from the source (DICOM: StudyDate, SeriesInstanceUID, AcquisitionDateTime,
    # where the patient id and the pre/post order came from); None for ordinary image files.
    source_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Pair sanity check: fault log-likelihood ratio, why, and ok/suspect/confirmed/rejected (NULL: unchecked)
    pair_check_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    pair_check_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    pair_status: Mapped[str | None] = mapped_column(String(16), nullable=True)

    labels: Mapped[list[Label]] = relationship(back_populates="case", order_by="Label.id")


class Label(Base):
    """One label event. Append-only: the current label of a case is its latest one."""

    __tablename__ = "labels"
    __table_args__ = (
        CheckConstraint("value IS NULL OR value IN (0, 1)", name="value"),
        CheckConstraint(_in("source", LABEL_SOURCES), name="source"),
        Index("ix_labels_case_id_id", "case_id", "id"),
        # "has this labeller already read this case" during a claim (one probe per candidate)
        Index("ix_labels_labeller_case_id", "labeller", "case_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    value: Mapped[int | None] = mapped_column(Integer)  # 0, 1, or NULL for "unsure"
    labeller: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    queue_item_id: Mapped[int | None] = mapped_column(ForeignKey("queue_items.id"), unique=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    case: Mapped[Case] = relationship(back_populates="labels")


class User(Base):
    """A person who labels or administers; password hashed (argon2) when no OIDC provider is used."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Revision 0006: a first OIDC login creates the account disabled and pending until an admin
    # approves it; who approved (or added) an account, and when. NULL for accounts older than 0006.
    pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None] = mapped_column()


class Job(Base):
    """A long operation run by a worker. Created before its task is sent; the UI reads progress here."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        Index("ix_jobs_status_id", "status", "id"),
        # At most one active job of an exclusive kind (0009): a second concurrent submit fails to insert
        # instead of passing the check-then-insert in ``submit_job`` together with the first.
        Index(
            "uq_jobs_one_active_round",
            "kind",
            unique=True,
            sqlite_where=text(ACTIVE_EXCLUSIVE_JOBS),
            postgresql_where=text(ACTIVE_EXCLUSIVE_JOBS),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    requester: Mapped[str] = mapped_column(String(128), default="cli")
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class Round(Base):
    """One active-learning round: model, calibration, threshold, strategy mix and the queued batch."""

    __tablename__ = "rounds"
    __table_args__ = (CheckConstraint(_in("status", ROUND_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", use_alter=True))
    calibration_id: Mapped[int | None] = mapped_column(ForeignKey("calibrations.id", use_alter=True))
    threshold: Mapped[float | None] = mapped_column(Float)
    strategy_mix: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()


class ModelVersion(Base):
    """A trained (or training) model; ``ready`` only once its artifact is complete and verified.

    ``did_not_learn``: the artifact is written (for debugging) but the learning check failed; the
    reasons and advice are in ``error`` and ``metrics["learning_check"]``. Only ``ready`` versions are
    warm-start parents, scored, calibrated, queued from, promoted or exported.
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_in("status", MODEL_STATUSES), name="status"),
        Index("ix_model_versions_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), unique=True)
    preset: Mapped[str] = mapped_column(String(32))
    backbone: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    data_counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    threshold: Mapped[float | None] = mapped_column(Float)
    threshold_policy: Mapped[str | None] = mapped_column(String(64))
    threshold_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    calibration_id: Mapped[int | None] = mapped_column(ForeignKey("calibrations.id", use_alter=True))
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128), default="cli")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class Promotion(Base):
    """A record of a version made the current best: who, when and why (the latest one wins)."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    promoted_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """An evaluation report of a model version on one named split (optionally after calibration)."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("model_version_id", "split", "method", name="uq_evaluations_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(8))
    method: Mapped[str] = mapped_column(String(32), default="none")
    n: Mapped[int] = mapped_column(Integer)
    positives: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    """Output of one model version on one case: logit, probability and, once MC-dropout passes ran on
    it, their standard deviation (``uncertainty``) and BALD mutual information in bits."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("model_version_id", "case_id", name="uq_predictions_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    logit: Mapped[float] = mapped_column(Float)
    probability: Mapped[float] = mapped_column(Float)
    uncertainty: Mapped[float | None] = mapped_column(Float)
    mutual_information: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Calibration(Base):
    """A calibrator fitted for one model version: parameters as JSON, metrics before/after with CIs."""

    __tablename__ = "calibrations"
    __table_args__ = (Index("ix_calibrations_version_method", "model_version_id", "method"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fitted_on: Mapped[str] = mapped_column(String(8), default="val")
    n_fit: Mapped[int] = mapped_column(Integer, default=0)
    positives_fit: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReliabilityCurve(Base):
    """Binned reliability data of one (calibration, split, binning), stored so curves can be overlaid."""

    __tablename__ = "reliability_curves"
    __table_args__ = (
        UniqueConstraint("calibration_id", "split", "binning", name="uq_reliability_curves_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    calibration_id: Mapped[int] = mapped_column(ForeignKey("calibrations.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(8))
    binning: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(Integer)
    positives: Mapped[int] = mapped_column(Integer)
    bins: Mapped[dict[str, Any]] = mapped_column(default=dict)


class QueueItem(Base):
    """A case waiting for (or leased to) an expert, with why it was chosen."""

    __tablename__ = "queue_items"
    __table_args__ = (
        CheckConstraint(_in("status", QUEUE_STATUSES), name="status"),
        CheckConstraint(_in("kind", QUEUE_KINDS), name="kind"),
        # The claim reads status = 'queued' in (priority DESC, id) order straight off this index.
        Index("ix_queue_items_claim", "status", text("priority DESC"), "id"),
        Index("ix_queue_items_case_id", "case_id"),
        Index(
            "uq_queue_items_open_case_kind",
            "case_id",
            "kind",
            unique=True,
            sqlite_where=text("status IN ('queued', 'leased')"),
            postgresql_where=text("status IN ('queued', 'leased')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default="label")
    strategy: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    exclude_labeller: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()
