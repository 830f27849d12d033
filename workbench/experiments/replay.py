"""The production round replayed with an oracle: label-efficiency figures that describe what a labeller gets.

Per seed and strategy the replay keeps a real workbench (SQLite database and home folder under
``OUT/seed-S/STRATEGY``) and drives it with the production code only:

1. **Splits** (per seed, shared by every strategy): a test set and a validation set dealt by patient
   and stratified (``test_fraction``, ``val_fraction``), imported labelled, as a clinic labels a
   validation and a test set up front; the rest is the pool, imported unlabelled except ``initial``
   cases drawn at random, stratified (the first expert labels, imported into ``train``).
2. **Rounds.** Each round is the production ``round`` job run in process (``jobs.runner.run_job``):
   training (warm-started on cached features after round 1, with the backbone-refresh schedule),
   inference, calibration with the threshold policy, and the queue built with the strategy's mix,
   de-duplication and two-stage MC scoring. The strategy is the round's ``mix`` (``default``: the
   production default mix; ``random``; a strategy name; or ``name=share+name=share``).
3. **Oracle.** The queued ``label`` items are claimed and answered through the labelling queue
   (``claim_next``/``submit_label``, labeller ``oracle``) with the data set's recorded label (what
   its reader said, label noise included), flipped at ``reader_noise``.
4. **Did not learn.** When a round stops because its version failed the learning check, the batch is
   the one the round itself queued (``active.guided``: the non-learned baseline fitted on the labels so
   far, under the strategy's mix; the cold start while a class has too few labels), rebuilt under the
   strategy's mix in a copied round; for the ``random`` strategy it is drawn at random. The row says
   ``did_not_learn``.

Round 0 of every strategy but the first is not retrained: its workbench is a copy of the first
strategy's right after round 0 (same labels, same seed, same model) whose open queue is rebuilt with
its own mix by the queue step's function (``active.building.build_queue``). The only differences from
production are the oracle, that everything runs in one process, and that copy.

Metrics per round (against the truth in ``ground_truth.csv`` when the data carries it, else the
recorded labels; on the test split): AUPRC, ECE of the calibrated probabilities, sensitivity at the
version's policy threshold; and the positives found (truth) among the cases queried so far.
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import ValidationError

ORACLE = "oracle"


@dataclass(frozen=True)
class ReplayConfig:
    """What one replay runs (validated by :func:`check_replay`)."""

    dataset: Path
    out: Path
    seeds: list[int]
    strategies: list[str] = field(default_factory=lambda: ["default", "random"])
    initial: int = 40
    rounds: int = 8
    batch: int = 20
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    reader_noise: float = 0.0
    preset: str = "cpu"
    epochs: int | None = None  # round 1's end-to-end epochs (None: the preset's)
    overrides: dict[str, Any] = field(default_factory=dict)
    mc_samples: int = 8


def strategy_mix(name: str) -> dict[str, float] | None:
    """The round's ``mix`` for a strategy name of the replay (None: the production default mix)."""
    from workbench.active.strategies import STRATEGIES, validate_mix

    if name == "default":
        return None
    if "=" in name:
        mix: dict[str, float] = {}
        for part in name.split("+"):
            key, _, share = part.partition("=")
            try:
                mix[key.strip()] = float(share)
            except ValueError:
                raise ValidationError(f"strategy {name!r}: {part!r} is not name=share") from None
        return validate_mix(mix)
    if name not in STRATEGIES:
        raise ValidationError(f"unknown strategy {name!r} (known: default, {', '.join(sorted(STRATEGIES))})")
    return {name: 1.0}


def check_replay(cfg: ReplayConfig) -> None:
    """Clear errors for a replay that cannot run, before anything is written."""
    if not cfg.seeds:
        raise ValidationError("seeds: give at least one seed")
    if len(set(cfg.strategies)) != len(cfg.strategies) or not cfg.strategies:
        raise ValidationError(f"strategies must be distinct and not empty, got {cfg.strategies}")
    for name in cfg.strategies:
        strategy_mix(name)
    for name, value in (("initial", cfg.initial), ("rounds", cfg.rounds), ("batch", cfg.batch)):
        if value < 1:
            raise ValidationError(f"{name} must be >= 1, got {value}")
    if not (0 < cfg.test_fraction < 0.5 and 0 < cfg.val_fraction < 0.5):
        raise ValidationError("test_fraction and val_fraction must each be in (0, 0.5)")
    if not 0 <= cfg.reader_noise < 0.5:
        raise ValidationError(f"reader_noise must be in [0, 0.5), got {cfg.reader_noise}")


@dataclass(frozen=True)
class Case:
    """One case of the data set: its manifest row, recorded label and (when known) true label."""

    case_id: str
    pre: str
    post: str
    patient: str
    recorded: int
    truth: int


def read_cases(dataset: Path) -> tuple[list[Case], str]:
    """Every case with its recorded label and (when a ``ground_truth.csv`` lies next to the manifest, as
    ``workbench synth`` writes it) its true label; returns the cases and what the metrics are scored
    against ("truth" or "recorded labels"). The oracle answers with the recorded label: what a reader
    said, label noise included."""
    from workbench.experiments.oracle import load_labelled

    labelled, _ = load_labelled(dataset)
    folder = Path(dataset) if Path(dataset).is_dir() else Path(dataset).parent
    known: dict[str, tuple[int, int]] = {}
    if (folder / "ground_truth.csv").is_file():
        with (folder / "ground_truth.csv").open(encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                truth = int(rec["label"])
                recorded = (rec.get("recorded_label") or "").strip()
                known[rec["case_id"]] = (int(recorded) if recorded else truth, truth)
    cases = [
        Case(
            c.case_id,
            str(c.pre),
            str(c.post),
            c.patient_id,
            *known.get(c.case_id, (int(c.label), int(c.label))),
        )
        for c in labelled
    ]
    return cases, "truth" if known else "recorded labels"


def deal(cases: Sequence[Case], seed: int, cfg: ReplayConfig) -> dict[str, list[int]]:
    """Indices of the seed's test, val, initial and pool cases (by patient, stratified on the recorded
    label, which is all a clinic knows)."""
    from workbench.data.splits import PatientCases, assign_patient_splits

    by_patient: dict[str, PatientCases] = {}
    for c in cases:
        by_patient.setdefault(c.patient, PatientCases(c.patient)).labels.append(c.recorded)
    proportions = {
        "train": 1.0 - cfg.test_fraction - cfg.val_fraction,
        "val": cfg.val_fraction,
        "test": cfg.test_fraction,
    }
    assigned = assign_patient_splits(list(by_patient.values()), {}, proportions, seed=seed)
    out: dict[str, list[int]] = {"test": [], "val": [], "pool": []}
    for i, c in enumerate(cases):
        out["pool" if assigned[c.patient] == "train" else assigned[c.patient]].append(i)
    pool = np.asarray(out["pool"])
    y = np.asarray([cases[i].recorded for i in pool])
    rng = np.random.default_rng([seed, 0x1A1])
    n_pos = min(int(y.sum()), max(2, round(cfg.initial * y.mean())))
    pos, neg = pool[y == 1], pool[y == 0]
    chosen = np.concatenate(
        [rng.choice(pos, n_pos, replace=False), rng.choice(neg, cfg.initial - n_pos, replace=False)]
    )
    out["initial"] = sorted(int(i) for i in chosen)
    out["pool"] = sorted(set(out["pool"]) - set(out["initial"]))
    need = cfg.rounds * cfg.batch
    if need > len(out["pool"]):
        raise ValidationError(
            f"rounds x batch = {need} labels, but seed {seed}'s pool holds {len(out['pool'])} cases"
        )
    for split in ("test", "val"):
        if not any(cases[i].recorded for i in out[split]):
            raise ValidationError(
                f"seed {seed}: the {split} split has no positive case; use a larger data set"
            )
    return out


def _link(src: str, dst: Path) -> str:
    """``src`` hard-linked at ``dst`` (copied across file systems); returns the name relative to the
    seed's data folder."""
    import os

    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return f"{dst.parent.name}/{dst.name}"


def _write_manifest(folder: Path, cases: Sequence[Case], parts: dict[str, list[int]]) -> Path:
    """The seed's import source under ``folder`` (the importer reads images only inside the manifest's
    folder, so the images are linked there): test and val labelled, the initial cases labelled in
    train, the pool unlabelled."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "pre_path", "post_path", "label", "patient_id", "split"])
        for split in ("test", "val", "initial", "pool"):
            for i in parts[split]:
                c = cases[i]
                pre = _link(c.pre, folder / c.case_id / f"pre{Path(c.pre).suffix}")
                post = _link(c.post, folder / c.case_id / f"post{Path(c.post).suffix}")
                label = "" if split == "pool" else c.recorded
                w.writerow([c.case_id, pre, post, label, c.patient, "train" if split == "initial" else split])
    return path


@dataclass
class Workbench:
    """One strategy's workbench of one seed."""

    folder: Path
    engine: Any
    settings: Any


def _open(folder: Path) -> Workbench:
    from workbench.config import Settings
    from workbench.db.engine import create_db_engine

    settings = Settings(home=folder / "home", database_url=f"sqlite:///{folder / 'wb.db'}")
    return Workbench(folder, create_db_engine(settings.db_url), settings)


def new_workbench(folder: Path, manifest: Path) -> Workbench:
    """A fresh database and home with the seed's manifest imported."""
    from workbench.data.importer import import_source
    from workbench.db.schema import upgrade

    folder.mkdir(parents=True, exist_ok=True)
    wb = _open(folder)
    upgrade(wb.engine)
    result = import_source(wb.engine, manifest, home=Path(wb.settings.home))
    if result.rejected:
        first = result.rejected[0]
        raise ValidationError(
            f"{len(result.rejected)} case(s) refused at import, first {first.case_id}: {first.reason}"
        )
    return wb


def copy_workbench(src: Workbench, folder: Path) -> Workbench:
    """A copy of ``src`` (database by SQLite's backup API, version files copied, the feature cache shared:
    it is keyed by content, and artifact paths in the database still point at ``src``'s files, which
    never change once written)."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "home" / "artifacts").mkdir(parents=True)
    source_art = Path(src.settings.artifacts)
    for entry in source_art.iterdir():
        target = folder / "home" / "artifacts" / entry.name
        if entry.name == "features":
            target.symlink_to(entry.resolve())
        elif entry.is_dir():
            shutil.copytree(entry, target)
    with sqlite3.connect(src.folder / "wb.db") as s_db, sqlite3.connect(folder / "wb.db") as d_db:
        s_db.backup(d_db)
    return _open(folder)


def run_round(wb: Workbench, cfg: ReplayConfig, mix: dict[str, float] | None, seed: int) -> dict[str, Any]:
    """One production round job, run in process; its result (``did_not_learn`` when it stopped)."""
    from workbench.actors import LOCAL_OPERATOR
    from workbench.jobs.runner import run_job
    from workbench.jobs.submit import submit_job

    train: dict[str, Any] = {"preset": cfg.preset, "seed": seed, "overrides": cfg.overrides}
    if cfg.epochs:
        train["epochs"] = cfg.epochs
    params = {"train": train, "batch_size": cfg.batch, "mix": mix, "mc_samples": cfg.mc_samples}
    job = submit_job(wb.engine, "round", params, requester=LOCAL_OPERATOR, send=lambda *_: "in-process")
    view = run_job(wb.engine, wb.settings, job, f"replay-{seed}")
    if view is None or view.status != "succeeded":
        raise ValidationError(
            f"round job {job} {view.status if view else 'not run'}: {view.error if view else ''}"
        )
    return dict(view.result or {})


def requeue(
    wb: Workbench, round_result: dict[str, Any], mix: dict[str, float] | None, cfg: ReplayConfig, seed: int
) -> int:
    """Replace a copied round's open label items by the queue its own mix builds (the queue step's
    function, same version, round and seed)."""
    from sqlalchemy import delete

    from workbench.active.building import build_queue
    from workbench.db.engine import session_scope
    from workbench.db.models import QueueItem

    with session_scope(wb.engine) as s:
        s.execute(
            delete(QueueItem).where(QueueItem.round_id == round_result["round"], QueueItem.kind == "label")
        )
    built = build_queue(
        wb.engine,
        wb.settings,
        round_result["model_version"],
        cfg.batch,
        round_id=round_result["round"],
        mix=mix,
        seed=seed,
        mc_samples=cfg.mc_samples if cfg.mc_samples >= 2 else 0,
    )
    return int(built["queued"])


def answer_queue(
    wb: Workbench, by_external: dict[str, Case], rng: np.random.Generator, reader_noise: float
) -> list[Case]:
    """The oracle claims and answers every open ``label`` item; returns the cases it labelled."""
    from workbench.active.labelling_queue import claim_next, submit_label

    done: list[Case] = []
    while (item := claim_next(wb.engine, ORACLE, kinds=["label"])) is not None:
        case = by_external[item.external_id]
        value = case.recorded if rng.random() >= reader_noise else 1 - case.recorded
        submit_label(wb.engine, item.item_id, ORACLE, value)
        done.append(case)
    return done


def requeue_unlearned(
    wb: Workbench,
    round_id: int,
    name: str,
    mix: dict[str, float] | None,
    cfg: ReplayConfig,
    seed: int,
    rng: np.random.Generator,
) -> int:
    """After a round that did not learn, where the round's own batch is not this strategy's (a round
    copied from another strategy, or ``random``): replace it. ``random`` draws at random; any other
    strategy gets what production queues then (``active.guided``, under its own mix, the round's seed)."""
    from sqlalchemy import delete

    from workbench.active.guided import queue_guided
    from workbench.db.engine import session_scope
    from workbench.db.models import QueueItem

    with session_scope(wb.engine) as s:
        s.execute(delete(QueueItem).where(QueueItem.round_id == round_id, QueueItem.kind == "label"))
    if name == "random":
        return queue_random(wb, cfg.batch, rng, round_id)
    return int(
        queue_guided(wb.engine, wb.settings, cfg.batch, mix=mix, seed=seed, round_id=round_id)["queued"]
    )


def queue_random(wb: Workbench, n: int, rng: np.random.Generator, round_id: int) -> int:
    """After a round that did not learn: ``n`` unlabelled pool cases drawn at random are queued for
    labelling (strategy ``random``, the reason says why), as a clinic would label some before the next
    round; the oracle answers them like any other item."""
    from workbench.active.cold_start import unlabelled_pool
    from workbench.active.labelling_queue import enqueue
    from workbench.active.strategies import Selected

    ids = [row[0] for row in unlabelled_pool(wb.engine)]
    picks = sorted(int(ids[i]) for i in rng.choice(len(ids), size=min(n, len(ids)), replace=False))
    why = "random: the round's version did not learn, so the random strategy draws its batch at random"
    return len(enqueue(wb.engine, [Selected(c, "random", 0.0, why) for c in picks], round_id=round_id))


def round_metrics(wb: Workbench, version: int, by_external: dict[str, Case]) -> dict[str, float | None]:
    """Test AUPRC, ECE (calibrated) and sensitivity at the policy threshold against the truth."""
    from sqlalchemy import select

    from workbench.calibration.measures import ece
    from workbench.calibration.service import calibrated_probabilities
    from workbench.db.engine import session_scope
    from workbench.db.models import Case as CaseRow
    from workbench.db.models import ModelVersion
    from workbench.model.predictions import load_predictions

    preds = load_predictions(wb.engine, version, "test")
    with session_scope(wb.engine) as s:
        ext = dict(s.execute(select(CaseRow.id, CaseRow.external_id).where(CaseRow.split == "test")).all())
        threshold = s.get(ModelVersion, version).threshold
    y = np.asarray([by_external[ext[int(c)]].truth for c in preds.case_ids])
    prob = calibrated_probabilities(wb.engine, version, preds.logit)
    from sklearn.metrics import average_precision_score

    out: dict[str, float | None] = {"test_n": float(len(y)), "test_positives": float(y.sum())}
    out["test_auprc"] = float(average_precision_score(y, prob)) if 0 < y.sum() < len(y) else None
    out["test_ece"] = float(ece(y, prob))
    out["test_sensitivity"] = (
        float((prob[y == 1] >= threshold).mean()) if threshold is not None and y.sum() else None
    )
    return out


def replay_seed(
    cfg: ReplayConfig, cases: Sequence[Case], seed: int, report: Callable[[str], None] = lambda _m: None
) -> list[dict[str, Any]]:
    """Every strategy of one seed; one row per strategy and round (round 0: the initial labels)."""
    parts = deal(cases, seed, cfg)
    by_external = {c.case_id: c for c in cases}
    root = cfg.out / f"seed-{seed}"
    root.mkdir(parents=True, exist_ok=True)
    manifest = _write_manifest(root / "data", cases, parts)
    pool_truth = [cases[i].truth for i in parts["pool"]]
    base_rate = float(np.mean(pool_truth))
    rows: list[dict[str, Any]] = []
    first: tuple[Workbench, dict[str, Any]] | None = None
    for name in cfg.strategies:
        mix = strategy_mix(name)
        rng = np.random.default_rng([seed, 0x0AC1E])  # the same oracle stream for every strategy
        queried: list[Case] = []
        common = {"seed": seed, "strategy": name, "pool_base_rate": base_rate, "initial": cfg.initial}
        rows.append({**common, "round": 0, "labels": cfg.initial, "queried": 0, "found": 0})
        for r in range(1, cfg.rounds + 1):
            copied = r == 1 and first is not None
            if copied:
                wb = copy_workbench(first[0], root / name)
                result = dict(first[1])
                if not result.get("did_not_learn"):
                    requeue(wb, result, mix, cfg, seed)
            else:
                if r == 1:
                    wb = new_workbench(root / name, manifest)
                result = run_round(wb, cfg, mix, seed)
                if r == 1 and first is None:
                    first = (copy_workbench(wb, root / "_round1"), result)
            learned = not result.get("did_not_learn")
            if not learned and (copied or name == "random"):  # else: the round's own guided batch stands
                requeue_unlearned(wb, result["round"], name, mix, cfg, seed, rng)
            trained_on = cfg.initial + len(queried)
            queried += answer_queue(wb, by_external, rng, cfg.reader_noise)
            metrics = round_metrics(wb, result["model_version"], by_external) if learned else {}
            rows.append(
                {
                    **common,
                    "round": r,
                    "labels_trained": trained_on,
                    "labels": cfg.initial + len(queried),
                    "queried": len(queried),
                    "found": sum(c.truth for c in queried),
                    "did_not_learn": not learned,
                    "backbone_refresh": bool((result.get("backbone") or {}).get("refresh")),
                    **metrics,
                }
            )
            report(
                f"seed {seed} {name} round {r}: {rows[-1]['found']}/{rows[-1]['queried']} positives, "
                f"test AUPRC {metrics.get('test_auprc')}"
            )
        wb.engine.dispose()
    return rows


def replay(cfg: ReplayConfig, report: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Run every seed; writes ``curves.csv``, ``summary.csv`` and ``summary.md`` under ``cfg.out`` and
    returns {"curves", "summary", "scored_against", "text"}."""
    from workbench.experiments.replay_stats import summarise_replay, summary_text
    from workbench.experiments.report import write_csv

    check_replay(cfg)
    cases, against = read_cases(cfg.dataset)
    cfg.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        rows += replay_seed(cfg, cases, seed, report)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        write_csv(cfg.out / "curves.csv", columns, rows)  # after every seed: a stopped run keeps its seeds
    summary = summarise_replay(rows)
    write_csv(cfg.out / "summary.csv", list(summary[0]), summary)
    text = summary_text(summary, against)
    (cfg.out / "summary.md").write_text(text + "\n", encoding="utf-8")
    return {"curves": rows, "summary": summary, "scored_against": against, "text": text}
