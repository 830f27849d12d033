"""One active-learning round with the feature cache at 1,000 labelled + N pool pairs, two-stage scoring.

Usage::

    python bench/bench_round.py [--labelled 1000] [--pool 10000 | --pools 10000,30000,100000]
        [--size 48x48] [--mc-samples 8] [--one-stage] [--work DIR]

Data (reused by later runs with the same ``--work``): ``--part`` (10,000) unlabelled pairs and the
labelled ones are generated once (``DIR/data/synth``); a larger pool adds variant parts, the generated
unlabelled pairs turned by a dihedral transform and re-encoded (``DIR/data/variant-K``: generating
pairs runs at ~12-60 pairs/s on two cores). The largest pool size M gets a workbench under
``DIR/pool-M`` with the labelled cases and the first M unlabelled ones, written directly to the
database (the importer's per-pair check takes ~0.25 s a pair on two loaded cores: hours at 100k);
each size N is measured on a copy of it cut to its first N pool cases (``DIR/pool-M/measure-N``).
``--generate-only`` writes the data and stops.

Set-up (not timed as "the round", reused by later runs): round 0 trains the CPU preset end to end on
the labelled cases; round 1 warm-starts from it on cached features and scores the pool through the
cache (filling the frozen backbone's feature cache for every image). The measured round is round 2:
the steps a warm-started round runs, each timed, in-process through the library functions the round
job calls: head retrain on cached features -> one deterministic pass over pool + val + test through
the cache (``mc_samples=0``) -> calibration -> queue building, whose shortlist stage runs the
MC-dropout passes over the shortlist only (``build_queue(mc_samples=...)``). ``--one-stage`` measures
the former way instead: MC passes during inference over the whole pool, none in the queue step.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("train", "infer", "calibrate", "queue")


def _pool_sizes(args: argparse.Namespace) -> list[int]:
    text = args.pools or str(args.pool)
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--pools must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"pool sizes must be positive, got {text!r}")
    return sizes


def _synth(work: Path, labelled: int, part: int, size: str) -> list[dict[str, str]]:
    """Rows of the generated data (``work/data/synth``: the labelled cases and ``part`` unlabelled ones,
    reused when complete), paths made absolute."""
    from workbench.data.synth import generate_dataset, parse_size

    n = labelled + part
    t = time.perf_counter()
    data = generate_dataset(
        work / "data" / "synth",
        n=n,
        positive_rate=0.1,
        seed=0,
        size=parse_size(size),
        unlabelled_fraction=part / n,
        difficulty="easy",
    )
    print(f"  data: {n} synthetic pairs at {size} ({time.perf_counter() - t:.1f} s, reused when there)")
    with data.manifest.open(newline="") as src:
        rows = list(csv.DictReader(src))
    for row in rows:
        row.update(pre_path=str(data.root / row["pre_path"]), post_path=str(data.root / row["post_path"]))
    return rows


def _variant(rows: list[dict[str, str]], k: int, work: Path) -> list[dict[str, str]]:
    """Part ``k`` >= 1 of the pool: the generated unlabelled pairs turned by dihedral transform k % 8 and
    re-encoded at JPEG quality 95 - k (distinct bytes, so distinct cases and cache entries)."""
    from PIL import Image

    folder = work / "data" / f"variant-{k}"
    done = folder / "done"
    out = []
    for row in rows:
        pair = {}
        for side in ("pre_path", "post_path"):
            src = Path(row[side])
            pair[side] = str(folder / src.parent.name / src.name)
        out.append(
            {**row, **pair, "case_id": f"v{k}-{row['case_id']}", "patient_id": f"v{k}-{row['patient_id']}"}
        )
    if done.exists():
        return out
    t = time.perf_counter()
    turn = [None, *Image.Transpose][k % 8]
    for row, new in zip(rows, out, strict=True):
        for side in ("pre_path", "post_path"):
            target = Path(new[side])
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(row[side]) as img:
                img = img.transpose(turn) if turn is not None else img.copy()
                img.save(target, quality=95 - k)
    done.touch()
    print(f"  data: variant part {k}, {len(out)} pairs ({time.perf_counter() - t:.1f} s)")
    return out


def _case_rows(work: Path, labelled: int, pool: int, size: str, part: int) -> list[dict[str, str]]:
    """The labelled rows and the first ``pool`` unlabelled ones (generated, then variant parts)."""
    rows = _synth(work, labelled, part, size)
    known = [r for r in rows if r["label"] != ""]
    unlabelled = [r for r in rows if r["label"] == ""]
    parts = [unlabelled]
    for k in range(1, -(-pool // len(unlabelled))):
        parts.append(_variant(unlabelled, k, work))
    return known + [r for p in parts for r in p][:pool]


def _insert_cases(engine: Any, rows: list[dict[str, str]], size: tuple[int, int]) -> dict[str, int]:
    """Case and label rows written directly (the importer's per-pair check is not what is measured and
    takes hours at this size on two cores); splits dealt by patient like the importer does."""
    from workbench.data.splits import PatientCases, assign_patient_splits, split_for_case
    from workbench.db.engine import session_scope
    from workbench.db.models import Case, Label
    from workbench.files import sha256_file

    patients: dict[str, PatientCases] = {}
    for row in rows:
        label = None if row["label"] == "" else int(row["label"])
        patients.setdefault(row["patient_id"], PatientCases(row["patient_id"])).labels.append(label)
    split_of = assign_patient_splits(list(patients.values()), {})
    counts: dict[str, int] = {}
    with session_scope(engine) as s:
        for start in range(0, len(rows), 5000):
            cases, labels = [], []
            for row in rows[start : start + 5000]:
                label = None if row["label"] == "" else int(row["label"])
                pre, post = sha256_file(row["pre_path"]), sha256_file(row["post_path"])
                split = split_for_case(split_of[row["patient_id"]], label)
                counts[split] = counts.get(split, 0) + 1
                case = Case(
                    external_id=row["case_id"],
                    patient_id=row["patient_id"],
                    pre_path=row["pre_path"],
                    post_path=row["post_path"],
                    pre_sha256=pre,
                    post_sha256=post,
                    pair_sha256=hashlib.sha256(f"{pre}:{post}".encode()).hexdigest(),
                    pre_width=size[0],
                    pre_height=size[1],
                    post_width=size[0],
                    post_height=size[1],
                    split=split,
                )
                cases.append(case)
                if label is not None:
                    labels.append((case, label))
            s.add_all(cases)
            s.flush()
            s.add_all(Label(case_id=c.id, value=v, labeller="import:0", source="import") for c, v in labels)
    return counts


def _workbench(work: Path, labelled: int, pool: int, size: str, part: int) -> tuple[Any, Any, Path]:
    """The engine and settings of ``work/pool-<pool>``, its cases written once."""
    from sqlalchemy import func, select

    from workbench.config import Settings
    from workbench.db.engine import create_db_engine, session_scope
    from workbench.db.models import Case
    from workbench.db.schema import upgrade

    folder = work / f"pool-{pool}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=folder / "home", database_url=f"sqlite:///{folder / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    with session_scope(engine) as s:
        have = s.scalar(select(func.count()).select_from(Case))
    if not have:
        rows = _case_rows(work, labelled, pool, size, part)
        t = time.perf_counter()
        from workbench.data.synth import parse_size

        counts = _insert_cases(engine, rows, parse_size(size))
        print(f"  cases: {len(rows)} written in {time.perf_counter() - t:.1f} s; splits {counts}")
    return engine, settings, folder


def _set_up(engine: Any, settings: Any, folder: Path, epochs: int) -> int:
    """The warm, cache-filled parent version (rounds 0 and 1), built once per workbench."""
    from workbench.jobs.params import TrainParams
    from workbench.model.registry import train_version
    from workbench.model.scoring import infer_version

    marker = folder / "setup.json"
    if marker.exists():
        return int(json.loads(marker.read_text())["parent"])
    t = time.perf_counter()
    params = {"preset": "cpu", "seed": 0, "epochs": epochs}
    v0 = train_version(engine, settings, TrainParams.parse(params))["model_version"]
    print(f"  round 0 train (end to end) {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    warm = {"preset": "cpu", "seed": 0, "parent_version": v0, "use_feature_cache": True}
    v1 = train_version(engine, settings, TrainParams.parse(warm))["model_version"]
    infer_version(engine, settings, v1, ["pool", "val", "test"], mc_samples=0, batch_size=64)
    print(f"  round 1 train + infer (feature cache filling) {time.perf_counter() - t:.1f} s")
    marker.write_text(json.dumps({"parent": v1}))
    return v1


def _trimmed_copy(folder: Path, pool: int) -> tuple[Any, Any]:
    """The set-up workbench copied (database by SQLite's backup API) with its pool cut to the first
    ``pool`` cases; its artifacts folder links the set-up's feature cache, so the round measured on the
    copy finds every image's features as the set-up left them, and its own version files stay apart."""
    import sqlite3

    from sqlalchemy import text

    from workbench.config import Settings
    from workbench.db.engine import create_db_engine, session_scope

    copy = folder / f"measure-{pool}"
    if copy.exists():
        import shutil

        shutil.rmtree(copy)
    (copy / "home" / "artifacts").mkdir(parents=True)
    (copy / "home" / "artifacts" / "features").symlink_to(folder / "home" / "artifacts" / "features")
    src, dst = sqlite3.connect(folder / "wb.db"), sqlite3.connect(copy / "wb.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    settings = Settings(home=copy / "home", database_url=f"sqlite:///{copy / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    with session_scope(engine) as s:
        cut = s.execute(
            text("SELECT id FROM cases WHERE split = 'pool' ORDER BY id LIMIT 1 OFFSET :n"), {"n": pool}
        ).scalar()
        if cut is not None:
            gone = "SELECT id FROM cases WHERE split = 'pool' AND id >= :cut"
            s.execute(text(f"DELETE FROM predictions WHERE case_id IN ({gone})"), {"cut": cut})
            s.execute(text("DELETE FROM cases WHERE split = 'pool' AND id >= :cut"), {"cut": cut})
    return engine, settings


def _measured_round(
    engine: Any, settings: Any, parent: int, batch: int, mc_samples: int, one_stage: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    """Round 2's steps, each timed; returns the times and the queue step's result."""
    from workbench.active.building import build_queue
    from workbench.calibration.service import calibrate_version
    from workbench.defaults import DEFAULT_METHODS, DEFAULT_POLICY
    from workbench.jobs.params import TrainParams
    from workbench.model.registry import train_version
    from workbench.model.scoring import infer_version

    times: dict[str, float] = {}
    warm = {"preset": "cpu", "seed": 0, "parent_version": parent, "use_feature_cache": True}
    t = time.perf_counter()
    version = train_version(engine, settings, TrainParams.parse(warm))["model_version"]
    times["train"] = time.perf_counter() - t
    t = time.perf_counter()
    infer_mc = mc_samples if one_stage else 0
    infer_version(engine, settings, version, ["pool", "val", "test"], mc_samples=infer_mc, batch_size=64)
    times["infer"] = time.perf_counter() - t
    t = time.perf_counter()
    calibrate_version(engine, version, DEFAULT_METHODS, DEFAULT_POLICY)
    times["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    queued = build_queue(
        engine, settings, version, batch, mc_samples=0 if one_stage else mc_samples, ranker="version"
    )
    times["queue"] = time.perf_counter() - t
    return times, queued


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelled", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--pools", default=None, help="Comma-separated pool sizes (overrides --pool).")
    ap.add_argument("--size", default="48x48")
    ap.add_argument("--epochs", type=int, default=10, help="Epochs of round 0 (end to end).")
    ap.add_argument("--batch", type=int, default=20, help="Batch size of the queue step.")
    ap.add_argument("--mc-samples", type=int, default=8)
    ap.add_argument("--one-stage", action="store_true", help="MC passes in inference over the whole pool.")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--part", type=int, default=10_000, help="Unlabelled pairs generated (then varied).")
    ap.add_argument("--generate-only", action="store_true", help="Write the data parts, then stop.")
    args = ap.parse_args()

    pools = _pool_sizes(args)
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-round-"))).resolve()
    if args.generate_only:
        _case_rows(work, args.labelled, max(pools), args.size, args.part)
        return
    mode = "one-stage (MC in inference)" if args.one_stage else "two-stage (MC on the shortlist)"
    rows = []
    # One set-up at the largest pool; each size is measured on a copy cut to its first N pool cases.
    engine, settings, folder = _workbench(work, args.labelled, max(pools), args.size, args.part)
    parent = _set_up(engine, settings, folder, args.epochs)
    engine.dispose()
    for pool in sorted(pools):
        print(f"pool {pool}:")
        engine, settings = _trimmed_copy(folder, pool)
        times, queued = _measured_round(engine, settings, parent, args.batch, args.mc_samples, args.one_stage)
        total = sum(times.values())
        load = os.getloadavg()
        short = queued.get("shortlist", {})
        rows.append((pool, times, total, short, load))
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        print(f"  round 2 (warm start, cache warm, {mode}): {parts}; total {total:.1f} s")
        print(f"  shortlist {short or 'none'}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        engine.dispose()
    print(f"\n| pool | {' | '.join(STEPS)} | total | shortlist (MC) | load (1 min) |")
    print("|---:|" + "---:|" * len(STEPS) + "---:|---:|---:|")
    for pool, times, total, short, load in rows:
        cells = " | ".join(f"{times[k]:.1f}" for k in STEPS)
        mc = f"{short.get('measured', 0)} + {short.get('measured_after_choice', 0)}" if short else "-"
        print(f"| {pool} | {cells} | {total:.1f} | {mc} | {load[0]:.2f} |")
    pool, _, total, _, _ = rows[-1]
    print(
        f"RESULT round with feature cache at {args.labelled} labelled + {pool} pool ({mode}): {total:.1f} s "
        f"(target <= 60 s: {'met' if total <= 60 else 'missed'})"
    )


if __name__ == "__main__":
    main()
