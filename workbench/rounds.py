"""Active-learning rounds: train -> infer -> calibrate -> queue, tied together by a ``rounds`` row.

A round warm-starts from the previous round's *ready* model when there is one. When the new
version did not learn (``model.learning_check``), the round stops right after training: no
inference or calibration, and nothing is queued from that version; the labellers get a batch chosen
by the non-learned baseline fitted on the labels so far (``active.guided``; the cold start when a class
has too few labels). The round ends ``did_not_learn`` with the reasons in its report and the job's
message and result say why. Its report tells what the labelling bought: labels added, the
positive yield of the batch against the pool's estimated base rate and against the random audit
slice, the training set's class balance and the model's test metrics. Rounds never overlap: a
second one is refused while one is queued or running. Before training, the pair sanity check
(``data.pair_check``) checks every case not checked yet; what it found is in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update

from workbench.actors import LocalOperator
from workbench.config import Settings
from workbench.db.engine import session_scope
from workbench.db.models import Evaluation, Job, Label, ModelVersion, QueueItem, Round, utcnow
from workbench.errors import ConflictError, NotFoundError, WorkbenchError
from workbench.jobs import dispatch, store
from workbench.jobs.context import JobCancelled, JobContext
from workbench.jobs.params import CalibrateParams, InferParams, QueueParams, RoundParams, TrainParams
from workbench.jobs.results import CalibrateResult, QueueResult, RoundResult, TrainResult
from workbench.jobs.runner import run_step
from workbench.jobs.submit import Sender, submit_job
from workbench.model.learning_check import DID_NOT_LEARN


def ensure_no_active_round(
    engine: Engine, except_job: int | None = None, stale_after: timedelta | None = None
) -> None:
    """ConflictError when a round job is already queued or running (rounds never overlap).

    A running round whose heartbeat is older than ``stale_after`` is dead, not running: it is ended
    (``store.active_job_of_kind``) instead of blocking every later round.
    """
    running = store.active_job_of_kind(engine, "round", except_id=except_job, stale_after=stale_after)
    if running is not None:
        raise ConflictError(f"round job {running} is already queued or running; wait for it or cancel it")


def _round_for_job(engine: Engine, job_id: int, params: RoundParams) -> tuple[int, int | None]:
    """(round id, previous round's ready model version) — a re-delivered job reuses its round row."""
    with session_scope(engine) as s:
        rnd = s.scalar(select(Round).where(Round.job_id == job_id))
        previous = s.scalar(
            select(Round.model_version_id)
            .join(ModelVersion, ModelVersion.id == Round.model_version_id)
            .where(ModelVersion.status == "ready", Round.job_id != job_id)
            .order_by(Round.number.desc())
            .limit(1)
        )
        if rnd is None:
            number = (s.scalar(select(func.max(Round.number))) or 0) + 1
            rnd = Round(
                number=number,
                status="running",
                job_id=job_id,
                batch_size=params.batch_size,
                strategy_mix=params.mix,
            )
            s.add(rnd)
            s.flush()
        else:
            rnd.status = "running"
        return rnd.id, previous


def round_job(ctx: JobContext[RoundParams]) -> RoundResult:
    """Job handler (``round`` kind): train, inference, calibration and queue as child jobs.

    On a worker, inference fans out (:func:`_fan_out_inference`): shards of ``infer_shard_size`` cases,
    each its own job on the ``gpu`` queue, and the round waits; when the last shard ends the round is
    handed back on the ``cpu`` queue and this handler continues with calibration and the queue
    (:func:`_after_inference`). Run in process (no sender registered) the steps run one after another.
    Scoring is two-stage: inference is one deterministic pass over every case; the MC-dropout passes
    (``mc_samples``) run in the queue step, for the shortlist the mix can pick from only
    (``active.shortlist``).
    """
    state = store.fan_out_state(ctx.engine, ctx.job_id)
    if state is not None:  # the continuation: the shards ended
        return _after_inference(ctx, state)
    engine, p = ctx.engine, ctx.params
    stale = timedelta(seconds=ctx.settings.heartbeat_stale_s)
    ensure_no_active_round(engine, except_job=ctx.job_id, stale_after=stale)
    # steps an earlier attempt left unfinished end failed, with their training versions (store does both)
    store.fail_running_children(engine, ctx.job_id, "lost with an earlier attempt of the round")
    round_id, previous = _round_for_job(engine, ctx.job_id, p)
    train_params = p.train.derive(round_id=round_id)
    backbone = None
    if p.warm_start and previous is not None and train_params.parent_version is None:
        wanted = train_params.use_feature_cache or p.feature_cache
        train_params = train_params.derive(
            parent_version=previous,
            use_feature_cache=wanted and _cache_pays_for(engine, previous, train_params),
        )
        if train_params.phases == 1:
            train_params, backbone = _backbone_schedule(ctx, train_params, previous)
    # Pairs imported since the last check are checked before training, so a flagged pair never trains.
    from workbench.data.pair_check import check_unchecked_safely

    pair_check = check_unchecked_safely(engine, "round")
    ctx.progress(0.0, pair_check["message"], force=True)
    state = {"round_id": round_id, "pair_check": pair_check, "backbone": backbone}
    try:
        trained = run_step(ctx, "train", train_params, 0.0, 0.6)
        assert isinstance(trained, TrainResult)
        version = trained.model_version
        state["model_version"] = version
        _update_round(engine, round_id, model_version_id=version)
        if trained.did_not_learn:
            return _stop_did_not_learn(ctx, round_id, trained)
        shards = _fan_out_inference(ctx, state)
        if shards is not None:
            return RoundResult(round=round_id, model_version=version, queued=0, waiting_for=shards)
        run_step(ctx, "infer", InferParams(model_version=version, mc_samples=0), 0.6, 0.85)
    except BaseException:
        _update_round(engine, round_id, status="failed", closed_at=utcnow())
        raise
    return _after_inference(ctx, state)


def _cache_pays_for(engine: Engine, version_id: int, params: TrainParams) -> bool:
    """Whether a round warm-started from this version should train on cached backbone maps
    (``model.features.cache_pays``): the version's stored architecture is the one trained on, and the
    run's own ``align_shots`` is the one the child takes (``training.load_parent``). A version with no
    stored model config is judged by the run's configuration."""
    from workbench.model.config import ModelConfig, run_configs
    from workbench.model.features import cache_pays

    run = run_configs(params)[0]
    with session_scope(engine) as s:
        version = s.get(ModelVersion, version_id)
        model = (version.config or {}).get("model") if version is not None else None
    parent = ModelConfig.from_dict(model) if model else run
    return cache_pays(parent.derive(align_shots=run.align_shots))


def _backbone_schedule(
    ctx: JobContext[RoundParams], train_params: TrainParams, previous: int
) -> tuple[TrainParams, dict[str, Any]]:
    """A warm-started round (head only, on cached features or on the images): add the backbone's
    fine-tuning phase when the refresh schedule says so (``model.backbone_refresh``); returns the train
    parameters and the decision."""
    from workbench.model.backbone_refresh import refresh_decision
    from workbench.model.registry import training_data

    labels_now = training_data(ctx.engine)[0].counts()["n"]
    decision = refresh_decision(
        ctx.engine,
        previous,
        labels_now,
        ctx.settings.backbone_refresh_rounds,
        ctx.settings.backbone_refresh_growth,
    )
    ctx.progress(0.0, decision.reason, force=True)
    if decision.refresh:
        train_params = train_params.derive(phases=2)
    return train_params, decision.to_dict()


def _fan_out_inference(ctx: JobContext[RoundParams], state: dict[str, Any]) -> list[int] | None:
    """Send the version's inference as shards to every gpu worker; their job ids, or None in process."""
    from workbench.model.scoring import plan_shards

    version = int(state["model_version"])
    ranges = plan_shards(
        ctx.engine, version, InferParams(model_version=version).splits, ctx.settings.infer_shard_size
    )
    steps = [("infer", InferParams(model_version=version, mc_samples=0, case_range=r)) for r in ranges]
    return dispatch.fan_out(ctx, steps, span=(0.6, 0.85), then_queue="cpu", state=state)


def _after_inference(ctx: JobContext[RoundParams], state: dict[str, Any]) -> RoundResult:
    """Calibrate and queue once every case is scored (in process, or as the fan-out's continuation)."""
    engine, p = ctx.engine, ctx.params
    round_id, version = int(state["round_id"]), int(state["model_version"])
    try:
        _check_shards(engine, state.get("children") or [])
        calibrated = run_step(
            ctx,
            "calibrate",
            CalibrateParams(model_version=version, methods=p.methods, policy=p.policy),
            0.85,
            0.93,
        )
        assert isinstance(calibrated, CalibrateResult)
        queued = run_step(
            ctx,
            "queue",
            QueueParams(
                model_version=version,
                batch_size=p.batch_size,
                round_id=round_id,
                mix=p.mix,
                second_reads=p.second_reads,
                relabel=p.relabel,
                seed=p.train.seed,
                mc_samples=p.mc_samples if p.mc_samples >= 2 else 0,
                ranker=p.ranker,
            ),
            0.93,
            1.0,
        )
        assert isinstance(queued, QueueResult)
    except BaseException:
        _update_round(engine, round_id, status="failed", closed_at=utcnow())
        raise
    with session_scope(engine) as s:
        version_row = s.get(ModelVersion, version)
        assert version_row is not None
        calibration_id, threshold = version_row.calibration_id, version_row.threshold
    _update_round(
        engine,
        round_id,
        status="labelling",
        calibration_id=calibration_id,
        threshold=threshold,
        report={
            "queue": queued.to_json(),
            "selected_calibration": calibrated.selected,
            "pair_check": state.get("pair_check"),
            "inference_shards": len(state.get("children") or []),
            "backbone": state.get("backbone"),
        },
    )
    return RoundResult(
        round=round_id,
        model_version=version,
        queued=queued.queued,
        threshold=threshold,
        backbone=state.get("backbone"),
    )


def _check_shards(engine: Engine, shard_ids: list[int]) -> None:
    """Every inference shard must have succeeded: a cancelled one cancels the round, a failed one fails it."""
    for shard_id in shard_ids:
        shard = store.get_job(engine, shard_id)
        if shard.status == "cancelled":
            raise JobCancelled()
        if shard.status != "succeeded":
            raise WorkbenchError(
                f"inference shard (job {shard_id}, cases {shard.params.get('case_range')}) "
                f"{shard.status}: {shard.error or shard.message}"
            )


COLD_START_ADVICE = (
    "nothing was queued: label more pool cases before the next round, e.g. `workbench queue cold-start "
    "--n 20` queues typical, diverse cases chosen without a model"
)


def _queue_without_a_model(ctx: JobContext[RoundParams], round_id: int) -> dict[str, Any]:
    """The batch a round that did not learn leaves the labellers (``active.guided``: the baseline fitted
    on the labels so far, or the cold start). Bad data (a WorkbenchError: an empty pool, a pair that no
    longer decodes; an unreadable file) is reported in the result and does not fail the round."""
    from workbench.active.guided import queue_guided

    p = ctx.params
    try:
        return queue_guided(
            ctx.engine,
            ctx.settings,
            p.batch_size,
            mix=p.mix,
            policy=p.policy,
            seed=p.train.seed,
            round_id=round_id,
        )
    except (WorkbenchError, OSError) as exc:
        return {"queued": 0, "error": str(exc)}


def _stop_did_not_learn(ctx: JobContext[RoundParams], round_id: int, trained: TrainResult) -> RoundResult:
    """End the round after a version that did not learn: nothing is scored, calibrated or queued from
    it; the labellers get a batch the non-learned baseline chose (:func:`_queue_without_a_model`)."""
    version = trained.model_version
    queue = _queue_without_a_model(ctx, round_id)
    queued = int(queue.get("queued") or 0) + int(queue.get("already_queued") or 0)
    if queued:
        how = (
            "the cold start (TypiClust)"
            if queue.get("strategy") == "cold_start"
            else "the non-learned baseline fitted on the labels so far"
        )
        queue_text = f"{queued} pool case(s) queued by {how}"
    else:
        queue_text = "nothing queued" + (f" ({queue['error']})" if queue.get("error") else "")
    message = f"round stopped after training (no inference or calibration; {queue_text}): {trained.message}"
    check = trained.learning_check or {}
    _update_round(
        ctx.engine,
        round_id,
        status=DID_NOT_LEARN,
        closed_at=utcnow(),
        report={"stopped": "did_not_learn", "message": message, "learning_check": check, "queue": queue},
    )
    ctx.progress(1.0, message, force=True)
    return RoundResult.of(
        {
            "round": round_id,
            "model_version": version,
            "did_not_learn": True,
            "queued": queued,
            "queued_by": queue.get("strategy"),
            "message": message,
            "reasons": check.get("reasons", []),
            "advice": [
                *check.get("advice", []),
                *([] if queued or queue.get("error") else [COLD_START_ADVICE]),
            ],
        }
    )


def _update_round(engine: Engine, round_id: int, **values: Any) -> None:
    with session_scope(engine) as s:
        s.execute(update(Round).where(Round.id == round_id).values(**values))


def round_summary(engine: Engine, round_id: int | None = None, *, stopping: bool = True) -> dict[str, Any]:
    """What a round bought so far (latest round by default); every rate with its n and a Wilson interval.

    With ``stopping`` the summary holds the stopping signal (``active.stopping.stopping_report``: is
    labelling still paying, against the previous round's version, or why that cannot be said); pages
    that list every round pass False and ask for it on the round they show (it reads predictions and
    bootstraps: 0.1 s on 2,000 pool cases, about 1 s on 100,000, measured on SQLite).
    """
    from workbench.active.ranker import ranked_by
    from workbench.active.stopping import stopping_report  # scipy: not for the labelling path
    from workbench.evaluation.bootstrap import wilson_interval

    with session_scope(engine) as s:
        rnd = (
            s.get(Round, round_id)
            if round_id
            else s.scalar(select(Round).order_by(Round.number.desc()).limit(1))
        )
        if rnd is None:
            raise NotFoundError("no round yet: submit one with `workbench submit round`")
        items = s.scalars(
            select(QueueItem).where(QueueItem.round_id == rnd.id, QueueItem.kind == "label")
        ).all()
        labels = {
            lab.queue_item_id: lab.value
            for lab in s.scalars(
                select(Label).where(Label.queue_item_id.in_([i.id for i in items]), Label.source == "expert")
            )
        }
        version = s.get(ModelVersion, rnd.model_version_id) if rnd.model_version_id else None
        test_eval = None
        if version is not None:
            test_eval = s.scalar(
                select(Evaluation)
                .where(Evaluation.model_version_id == version.id, Evaluation.split == "test")
                .order_by(Evaluation.id.desc())
                .limit(1)
            )
        previous_created = s.scalar(
            select(Round.created_at).where(Round.number < rnd.number).order_by(Round.number.desc()).limit(1)
        )
        since = s.scalar(
            select(func.count())
            .select_from(Label)
            .where(Label.source == "expert", Label.value.is_not(None), Label.created_at >= rnd.created_at)
        )
        report = dict(rnd.report or {})
    by_strategy: dict[str, dict[str, int]] = {}
    for item in items:
        row = by_strategy.setdefault(item.strategy, {"queued": 0, "labelled": 0, "positive": 0})
        row["queued"] += 1
        value = labels.get(item.id)
        if value is not None:
            row["labelled"] += 1
            row["positive"] += int(value == 1)
    labelled = sum(r["labelled"] for r in by_strategy.values())
    positives = sum(r["positive"] for r in by_strategy.values())

    def rate(pos: int, n: int) -> dict[str, Any]:
        ci = wilson_interval(pos, n) if n else None
        return {"positive": pos, "n": n, "rate": pos / n if n else None, "wilson": list(ci) if ci else None}

    audit = by_strategy.get("random", {"labelled": 0, "positive": 0})
    return {
        "round": rnd.number,
        "round_id": rnd.id,
        "status": rnd.status,
        "stopped": report.get("message") if rnd.status == DID_NOT_LEARN else None,
        "model_version": rnd.model_version_id,
        "threshold": rnd.threshold,
        "batch": {"queued": len(items), "labelled": labelled},
        "labels_added_since_round_start": int(since or 0),
        "previous_round_at": previous_created.isoformat() if previous_created else None,
        "yield": rate(positives, labelled),
        "yield_random_audit": rate(audit["positive"], audit["labelled"]),
        "pool_estimated_base_rate": (report.get("queue") or {}).get("pool_mean_probability"),
        "by_strategy": by_strategy,
        "ranked_by": ranked_by(report.get("queue") or {}),
        "training_set": (version.data_counts or {}).get("train") if version else None,
        "test_metrics": {
            "split": "test",
            "n": test_eval.n,
            "positives": test_eval.positives,
            "auroc": test_eval.report.get("auroc"),
            "auprc": test_eval.report.get("auprc"),
        }
        if test_eval
        else None,
        "stopping": stopping_report(engine, rnd.id) if stopping else None,
    }


#: Who submits an automatic round: the operator (the setting is theirs), recorded as ``operator:auto``
#: so the Jobs page tells it from a round someone submitted.
AUTO_REQUESTER = LocalOperator("auto")


@dataclass(frozen=True)
class RetrainStatus:
    """Where the automatic retraining trigger stands (``WORKBENCH_RETRAIN_AFTER_LABELS``)."""

    every: int  # new expert labels that start a round; 0: the trigger is off
    new_labels: int  # expert labels since the last round (or round job) started
    active_job: int | None  # a round job queued, running or waiting: the trigger waits for it
    active_status: str | None  # that job's status
    active_automatic: bool  # that job was started by the trigger

    @property
    def remaining(self) -> int | None:
        """Labels still needed before the next automatic round (None: the trigger is off)."""
        return max(0, self.every - self.new_labels) if self.every > 0 else None


def _last_round_start(s: Any) -> datetime | None:
    """When the latest round, or round job, was created: labels before it were in that round's reach.

    The job counts too, so a round job that ended before making its round row (broker down, cancelled
    while queued) does not make every later label submit another round."""
    starts = [
        s.scalar(select(func.max(Round.created_at))),
        s.scalar(select(func.max(Job.created_at)).where(Job.kind == "round", Job.parent_id.is_(None))),
    ]
    known = [_utc(t) for t in starts if t is not None]
    return max(known) if known else None


def _utc(moment: datetime) -> datetime:
    """SQLite gives naive UTC datetimes back: make them comparable with aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _count_new_labels(s: Any) -> int:
    q = select(func.count()).select_from(Label).where(Label.source == "expert", Label.value.is_not(None))
    last = _last_round_start(s)
    if last is not None:
        q = q.where(Label.created_at >= last)
    return int(s.scalar(q) or 0)


def new_expert_labels_since_last_round(engine: Engine) -> int:
    """Expert labels (not unsure) recorded since the latest round, or round job, was created: what
    drives the automatic retraining trigger."""
    with session_scope(engine) as s:
        return _count_new_labels(s)


def retrain_status(engine: Engine, every_n_labels: int) -> RetrainStatus:
    """The trigger's state in one read: labels since the last round and the active round job, if any."""
    with session_scope(engine) as s:
        active = s.execute(
            select(Job.id, Job.status, Job.requester)
            .where(Job.kind == "round", Job.status.in_(store.ACTIVE))
            .order_by(Job.id)
            .limit(1)
        ).first()
        new = _count_new_labels(s) if every_n_labels > 0 else 0
    return RetrainStatus(
        every=max(0, every_n_labels),
        new_labels=new,
        active_job=active.id if active else None,
        active_status=active.status if active else None,
        active_automatic=bool(active and active.requester == str(AUTO_REQUESTER)),
    )


def should_start_round(engine: Engine, every_n_labels: int) -> bool:
    """Whether the automatic trigger is due: N new labels since the last round and no round active."""
    status = retrain_status(engine, every_n_labels)
    return status.remaining == 0 and status.active_job is None


def trigger_round_if_due(
    engine: Engine, settings: Settings, send: Sender, params: RoundParams | None = None
) -> int | None:
    """Submit a round when ``settings.retrain_after_labels`` (N > 0) new expert labels have come in
    since the last round and no round is queued, running or waiting; the new job's id, else None.

    Called after every expert label (the Label page, ``workbench label``). Many labellers may cross
    the threshold at once: each one that sees it due submits, the unique index over active round jobs
    lets one insert, and the others' ConflictError means "already started" and is swallowed here, so
    exactly one round job is created. A round whose heartbeat went stale does not block
    (``submit_job`` ends it). :class:`~workbench.jobs.submit.BrokerUnavailable` propagates: the job row
    is marked failed and the next N labels try again. ``params``: the round's (default: RoundParams()).
    """
    every = settings.retrain_after_labels
    if every <= 0 or not should_start_round(engine, every):
        return None
    try:
        return submit_job(
            engine,
            "round",
            params if params is not None else RoundParams(),
            requester=AUTO_REQUESTER,
            send=send,
            stale_after=settings.heartbeat_stale,
        )
    except ConflictError:
        return None  # another labeller's trigger (or an admin) started the round first
