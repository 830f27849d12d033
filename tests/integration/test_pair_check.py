"""The pair sanity check on real synthetic images: planted faults, storage, queue, training, CLI, UI."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from streamlit.testing.v1 import AppTest

from conftest import run_cli
from workbench.active.labelling_queue import (
    answer_pair_check,
    claim_next,
    resolve_pair,
    submit_label,
)
from workbench.config import load_settings
from workbench.data.importer import import_source
from workbench.data.pair_check import (
    MIN_PAIRS,
    PairCheckResult,
    band_image,
    check_pair_files,
    check_pairs,
    check_unchecked_safely,
    flagged_pairs,
    pair_status_counts,
    register,
)
from workbench.data.synth import PAIR_FAULT_COLUMN, TRUTH_COLUMNS, SynthSummary, generate_dataset
from workbench.db.engine import create_db_engine, engine_from_settings, session_scope
from workbench.db.models import Case, QueueItem, utcnow
from workbench.db.schema import downgrade, upgrade
from workbench.errors import ConflictError, ValidationError
from workbench.model.registry import training_data
from workbench.users import add_user

# 80 pairs at 96 px, 4 swapped and 4 mismatched: small, yet every planted fault is found (seeded).
DATA = dict(n=80, seed=0, size=(96, 96), positive_rate=0.2)
RATES = dict(swap_rate=0.05, mismatch_rate=0.05)
APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")


def _truth(summary: SynthSummary) -> dict[str, str]:
    with summary.ground_truth.open(newline="", encoding="utf-8") as fh:
        return {r["case_id"]: r.get(PAIR_FAULT_COLUMN, "") for r in csv.DictReader(fh)}


def _manifest(summary: SynthSummary) -> list[dict[str, str]]:
    with summary.manifest.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate_dataset(tmp_path_factory.mktemp("clean") / "data", **DATA)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate_dataset(tmp_path_factory.mktemp("faulty") / "data", **DATA, **RATES)


@pytest.fixture(scope="module")
def faulty_result(faulty: SynthSummary) -> PairCheckResult:
    rows = _manifest(faulty)
    root = faulty.root
    return check_pair_files(
        [(root / r["pre_path"], root / r["post_path"]) for r in rows], [r["patient_id"] for r in rows]
    )


# ------------------------------------------------------------------------------------------------
# Planting faults (synth)


def test_synth_plants_exact_counts_and_the_right_files(clean: SynthSummary, faulty: SynthSummary) -> None:
    truth = _truth(faulty)
    assert faulty.swapped == sum(t == "swapped" for t in truth.values()) == 4
    assert faulty.mismatched == sum(t == "mismatched" for t in truth.values()) == 4
    header = faulty.ground_truth.read_text().splitlines()[0].split(",")
    assert header == [*TRUTH_COLUMNS, PAIR_FAULT_COLUMN]
    params = json.loads((faulty.root / "synth.json").read_text())
    assert params["swap_rate"] == 0.05 and params["mismatch_rate"] == 0.05
    assert "4 case(s) SWAPPED" in (faulty.root / "README.txt").read_text()
    patients = {r["case_id"]: r["patient_id"] for r in _manifest(clean)}
    clean_posts = {
        (clean.root / "cases" / cid / "post.jpg").read_bytes(): cid for cid in patients
    }  # rendering does not depend on the faults: the clean output holds every original image
    for cid, fault in truth.items():
        pre = (faulty.root / "cases" / cid / "pre.jpg").read_bytes()
        post = (faulty.root / "cases" / cid / "post.jpg").read_bytes()
        orig_pre = (clean.root / "cases" / cid / "pre.jpg").read_bytes()
        orig_post = (clean.root / "cases" / cid / "post.jpg").read_bytes()
        if fault == "swapped":
            assert (pre, post) == (orig_post, orig_pre)
        elif fault == "mismatched":
            donor = clean_posts[post]
            assert pre == orig_pre and donor != cid and patients[donor] != patients[cid]
            assert truth[donor] == ""  # taken from an unfaulted case
        else:
            assert (pre, post) == (orig_pre, orig_post)


def test_synth_without_faults_writes_no_fault_column(clean: SynthSummary) -> None:
    header = clean.ground_truth.read_text().splitlines()[0].split(",")
    assert header == list(TRUTH_COLUMNS)
    params = json.loads((clean.root / "synth.json").read_text())
    assert "swap_rate" not in params and "mismatch_rate" not in params
    assert clean.swapped == clean.mismatched == 0


@pytest.mark.parametrize(
    ("rates", "match"),
    [
        (dict(swap_rate=-0.1), "swap_rate must be a number between 0 and 0.5"),
        (dict(mismatch_rate=0.6), "mismatch_rate must be a number between 0 and 0.5"),
        (dict(swap_rate="0.1"), "swap_rate must be a number"),
        (dict(mismatch_rate=True), "mismatch_rate must be a number"),
        (dict(swap_rate=float("nan")), "swap_rate must be a number"),
        (dict(swap_rate=0.5, mismatch_rate=0.5), "leave at least one case unfaulted"),
    ],
)
def test_synth_refuses_bad_fault_rates(tmp_path: Path, rates: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        generate_dataset(tmp_path / "out", n=10, size=(32, 32), **rates)


def test_synth_refuses_a_mismatch_without_another_patient(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least one other patient"):
        generate_dataset(tmp_path / "out", n=3, size=(32, 32), cases_per_patient=100, mismatch_rate=0.34)


def test_synth_cli_plants_faults(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = run_cli(
        "synth", str(out), "--n", "20", "--size", "48x48", "--swap-rate", "0.1", "--mismatch-rate", "0.1"
    )
    assert res.returncode == 0, res.stderr
    assert "planted pair faults: 2 swapped, 2 mismatched" in res.stdout
    bad = run_cli("synth", str(tmp_path / "bad"), "--n", "20", "--swap-rate", "0.9")
    assert bad.returncode != 0 and "swap_rate must be a number between 0 and 0.5" in bad.stderr


# ------------------------------------------------------------------------------------------------
# The check itself (files in, verdicts out)


def test_planted_faults_are_flagged_with_the_right_reason(
    faulty: SynthSummary, faulty_result: PairCheckResult
) -> None:
    rows = _manifest(faulty)
    truth = _truth(faulty)
    flagged = {rows[k]["case_id"]: v for k, v in faulty_result.verdicts.items() if v.status == "suspect"}
    planted = {cid: fault for cid, fault in truth.items() if fault}
    assert {cid: flagged[cid].fault for cid in planted if cid in flagged} == planted
    for cid, fault in planted.items():
        verdict = flagged[cid]
        prefix = "probably swapped" if fault == "swapped" else "not the same cervix"
        assert verdict.reason.startswith(prefix) and verdict.score >= 1.5, verdict.reason
    false_alarms = set(flagged) - set(planted)
    assert len(false_alarms) <= 2, false_alarms
    ok = [v for v in faulty_result.verdicts.values() if v.status == "ok"]
    assert ok and all(v.reason.startswith("ok: ") and v.fault == "" for v in ok)
    assert faulty_result.stats["pairs"] == 80 and faulty_result.stats["separation_z"] > 3


def test_clean_data_gives_few_flags(clean: SynthSummary) -> None:
    rows = _manifest(clean)
    root = clean.root
    result = check_pair_files(
        [(root / r["pre_path"], root / r["post_path"]) for r in rows], [r["patient_id"] for r in rows]
    )
    flagged = [k for k, v in result.verdicts.items() if v.status == "suspect"]
    assert len(result.verdicts) == 80 and len(flagged) <= 3, flagged


def test_registration_tolerates_misalignment_and_exposure(clean: SynthSummary) -> None:
    """A shot moved by a few pixels, rotated a few degrees, darker and bluer is still the same cervix."""
    cases = clean.root / "cases"
    pre = np.asarray(Image.open(cases / "synth-00001" / "pre.jpg").convert("RGB"))
    moved = Image.fromarray(pre).rotate(4, resample=Image.Resampling.BILINEAR, translate=(3, -2))
    drifted = np.clip(np.asarray(moved, dtype=np.float32) * [0.75, 0.8, 0.95], 0, 255).astype(np.uint8)
    other = np.asarray(Image.open(cases / "synth-00002" / "post.jpg").convert("RGB"))
    same = register(band_image(pre), band_image(drifted))
    different = register(band_image(pre), band_image(other))
    assert same.similarity > 0.8 and same.similarity > different.similarity + 0.2
    assert abs(same.angle) <= 6 and (same.dy, same.dx) != (0, 0)


def test_too_few_pairs_is_a_clear_error(clean: SynthSummary) -> None:
    rows = _manifest(clean)[:10]
    with pytest.raises(ValidationError, match=f"at least {MIN_PAIRS} pairs"):
        check_pair_files(
            [(clean.root / r["pre_path"], clean.root / r["post_path"]) for r in rows],
            [r["patient_id"] for r in rows],
        )
    with pytest.raises(ValidationError, match="2 pairs but 1 patient ids"):
        check_pair_files([("a", "b"), ("c", "d")], ["p"])
    with pytest.raises(ValidationError, match="target indices"):
        check_pair_files([("a", "b")] * 40, [str(i) for i in range(40)], targets=[40])


# ------------------------------------------------------------------------------------------------
# Storage, queue, training (SQLite and PostgreSQL)


def _ids(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as s:
        return {e: i for e, i in s.execute(select(Case.external_id, Case.id))}


def _statuses(engine: Engine) -> dict[str, str | None]:
    with session_scope(engine) as s:
        return {e: st for e, st in s.execute(select(Case.external_id, Case.pair_status))}


def _trained(engine: Engine) -> set[int]:
    train, val = training_data(engine)
    return set(train.case_ids) | set(val.case_ids)


def test_import_flags_queues_excludes_and_experts_decide(engine: Engine, faulty: SynthSummary) -> None:
    result = import_source(engine, faulty.manifest, report_dir=faulty.root.parent / "reports")
    assert result.imported == 80
    assert result.pair_check and "80 pair(s) checked" in result.pair_check, result.pair_check
    truth = _truth(faulty)
    statuses = _statuses(engine)
    planted = {cid for cid, fault in truth.items() if fault}
    suspects = {cid for cid, st in statuses.items() if st == "suspect"}
    assert planted <= suspects and len(suspects - planted) <= 2
    assert set(statuses.values()) <= {"ok", "suspect"}
    listed = flagged_pairs(engine)
    assert {f.external_id for f in listed} == suspects
    assert all(f.score is not None and f.reason for f in listed)
    assert [f.score for f in listed] == sorted((f.score for f in listed), reverse=True)
    assert pair_status_counts(engine)["suspect"] == len(suspects)

    ids = _ids(engine)
    with session_scope(engine) as s:
        items = s.scalars(select(QueueItem).where(QueueItem.kind == "pair-check")).all()
        assert {i.case_id for i in items} == {ids[c] for c in suspects}
        assert all(i.status == "queued" and i.reason and i.reason.split(":")[0] for i in items)
        trainable = set(s.scalars(select(Case.id).where(Case.split.in_(("train", "pool", "val")))))
    trained = _trained(engine)
    assert trained and not trained & {ids[c] for c in suspects}
    labelled_suspects = [c for c in sorted(suspects) if ids[c] in trainable]
    assert labelled_suspects, "the seed must put a suspect pair in a trained split"

    # The labelling queue never hands out a pair check, and a label cannot answer one.
    assert claim_next(engine, "alice") is None
    item = claim_next(engine, "alice", kinds=["pair-check"])
    assert item is not None and item.kind == "pair-check"
    with pytest.raises(ValidationError, match="is a pair check"):
        submit_label(engine, item.item_id, "alice", 1)
    with pytest.raises(ConflictError, match="leased to alice"):
        answer_pair_check(engine, item.item_id, "bob", True)
    answer = answer_pair_check(engine, item.item_id, "alice", True, note="same cervix, order right")
    assert answer.status == "confirmed" and item.item_id in answer.closed_items
    assert answer_pair_check(engine, item.item_id, "alice", True).duplicate
    with session_scope(engine) as s:
        case = s.get(Case, item.case_id)
        assert case is not None and case.pair_status == "confirmed"
        assert (
            case.pair_check_reason.startswith("confirmed by alice")
            and "same cervix" in case.pair_check_reason
        )
        done = s.get(QueueItem, item.item_id)
        assert done is not None and done.status == "done" and done.lease_holder == "alice"
    if item.case_id in trainable:
        assert item.case_id in _trained(engine)

    # Outside the queue (the CLI's way): confirm one back into training, reject another.
    others = [c for c in labelled_suspects if ids[c] != item.case_id]
    assert len(others) >= 2, "the seed must put two more suspect pairs in trained splits"
    back, out = others[0], others[-1]
    assert ids[back] not in _trained(engine)
    assert resolve_pair(engine, ids[back], "bob", True).status == "confirmed"
    assert ids[back] in _trained(engine)
    rejected = resolve_pair(engine, ids[out], "bob", False)
    assert rejected.status == "rejected" and ids[out] not in _trained(engine)
    with session_scope(engine) as s:
        open_items = s.scalars(
            select(QueueItem.id).where(
                QueueItem.case_id == ids[out], QueueItem.status.in_(("queued", "leased"))
            )
        ).all()
    assert open_items == []
    with pytest.raises(ValidationError, match="True \\(the pair is sound\\) or False"):
        resolve_pair(engine, ids[out], "bob", "yes")  # type: ignore[arg-type]

    # A re-check never overrides an expert and leaves ok cases ok.
    again = check_pairs(engine, recheck=True)
    assert again.checked == 80 - 3  # every case but the three an expert decided
    statuses = _statuses(engine)
    assert statuses[out] == "rejected" and statuses[back] == "confirmed"


def test_unreadable_pair_stays_unchecked_and_failures_never_raise(
    engine: Engine, faulty: SynthSummary, tmp_path: Path
) -> None:
    # A copy of the data, so removing a file does not touch the shared fixture.
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in faulty.root.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(faulty.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    result = import_source(engine, copy / "manifest.csv", report_dir=tmp_path / "reports")
    assert "80 pair(s) checked" in (result.pair_check or "")
    (copy / "cases" / "synth-00005" / "post.jpg").unlink()
    ids = _ids(engine)
    with session_scope(engine) as s:
        s.execute(update(Case).where(Case.id == ids["synth-00005"]).values(pair_status=None))
    summary = check_pairs(engine)
    assert summary.unreadable == 1 and summary.checked == 0
    with session_scope(engine) as s:
        case = s.get(Case, ids["synth-00005"])
        assert case is not None and case.pair_status is None
        assert case.pair_check_reason.startswith("unchecked: ") and "file not found" in case.pair_check_reason
    assert summary.message().endswith("; 1 unreadable, left unchecked")

    # The check itself failing (here: a database whose schema lacks its columns) is reported, not raised.
    old = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(old, "0004")
    out = check_unchecked_safely(old, "import")
    assert "error" in out and out["message"].startswith("pair check failed after the import")
    assert "the import is kept and the cases stay unchecked" in out["message"]
    assert check_unchecked_safely(old, "round")["message"].startswith("pair check failed before training")
    with pytest.raises(ValidationError, match="when must be"):
        check_unchecked_safely(old, "lunch")
    old.dispose()


def test_too_few_cases_stay_unchecked_with_a_note(engine: Engine, tmp_path: Path) -> None:
    small = generate_dataset(tmp_path / "small", n=12, size=(48, 48), seed=2)
    result = import_source(engine, small.manifest, report_dir=tmp_path / "reports")
    assert result.imported == 12
    note = result.pair_check or ""
    assert "at least 30 pairs" in note and "12 case(s) left unchecked" in note, note
    assert set(_statuses(engine).values()) == {None}


def test_check_pairs_refuses_bad_arguments(engine: Engine) -> None:
    from workbench.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no case with id 12345"):
        check_pairs(engine, [12345])
    with pytest.raises(ValidationError, match="reference_size"):
        check_pairs(engine, reference_size=-1)
    with pytest.raises(ValidationError, match="unknown pair status"):
        flagged_pairs(engine, ("maybe",))
    assert check_pairs(engine).note == "no unchecked pair"


# ------------------------------------------------------------------------------------------------
# Migration 0005 (SQLite and PostgreSQL)


def test_migration_0005_upgrade_and_downgrade(db_url: str) -> None:
    eng = create_db_engine(db_url)
    upgrade(eng, "0004")
    assert "pair_status" not in {c["name"] for c in inspect(eng).get_columns("cases")}
    upgrade(eng, "0005")
    cols = {c["name"]: c for c in inspect(eng).get_columns("cases")}
    assert {"pair_check_score", "pair_check_reason", "pair_status"} <= set(cols)
    assert all(cols[c]["nullable"] for c in ("pair_check_score", "pair_check_reason", "pair_status"))
    now = utcnow()
    case = dict(
        external_id="c1", patient_id="p1", pre_path="a", post_path="b", pre_sha256="1", post_sha256="2",
        pair_sha256="3", pre_width=1, pre_height=1, post_width=1, post_height=1, split="train", created_at=now,
    )  # fmt: skip
    with eng.begin() as conn:
        conn.execute(insert(Case.__table__).values(**case, pair_status="suspect"))
        case_id = conn.execute(select(Case.__table__.c.id)).scalar_one()
        conn.execute(
            insert(QueueItem.__table__).values(
                case_id=case_id, kind="pair-check", strategy="pair-check", priority=1.0, status="queued",
                created_at=now,
            )
        )  # fmt: skip
    with pytest.raises(IntegrityError), eng.begin() as conn:
        conn.execute(text("UPDATE cases SET pair_status = 'maybe'"))
    downgrade(eng, "0004")
    assert "pair_status" not in {c["name"] for c in inspect(eng).get_columns("cases")}
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM queue_items")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM cases")).scalar_one() == 1
    with pytest.raises(IntegrityError), eng.begin() as conn:
        conn.execute(
            insert(QueueItem.__table__).values(
                case_id=case_id,
                kind="pair-check",
                strategy="x",
                priority=1.0,
                status="queued",
                created_at=now,
            )
        )
    upgrade(eng)
    eng.dispose()


# ------------------------------------------------------------------------------------------------
# Surfaces: CLI and the Data page


def test_cli_cases_suspect_lists_flagged_pairs_and_confirm_pair(faulty: SynthSummary, tmp_path: Path) -> None:
    env = {"WORKBENCH_HOME": os.environ["WORKBENCH_HOME"]}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    res = run_cli("import", str(faulty.manifest), "--report-dir", str(tmp_path / "reports"), env=env)
    assert res.returncode == 0, res.stderr
    assert "pair check: 80 pair(s) checked" in res.stdout
    res = run_cli("cases", "--suspect", env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    n = int(lines[0].split()[0])
    assert n >= 8 and "with pair status suspect" in lines[0]
    listed = [line.split("\t") for line in lines if line.startswith("synth-")]
    assert len(listed) == n
    truth = _truth(faulty)
    for case_id, _split, score, reason in listed:
        assert score.startswith("score ") and float(score.split()[1]) >= 1.5
        if truth[case_id]:
            assert reason.startswith(
                "probably swapped" if truth[case_id] == "swapped" else "not the same cervix"
            )
    assert run_cli("cases", env=env).stdout.strip()  # plain counts still work

    eng = engine_from_settings(load_settings())  # the same WORKBENCH_HOME (conftest sets it per test)
    add_user(eng, "alice", "alice-password-1", "labeller")
    eng.dispose()
    case_id = listed[0][0]
    res = run_cli("cases", "confirm-pair", case_id, "--ok", "--as", "alice", env=env)
    assert res.returncode == 0, res.stderr
    assert f"case {case_id}: pair confirmed by alice" in res.stdout
    res = run_cli("cases", "--pair-status", "confirmed", env=env)
    assert res.stdout.splitlines()[0].startswith("1 case(s) with pair status confirmed")
    for args, message in [
        (("cases", "confirm-pair", case_id, "--as", "alice"), "say --ok"),
        (("cases", "confirm-pair", "nope", "--reject", "--as", "alice"), "no case with id or external id"),
        (("cases", "confirm-pair", case_id, "--reject", "--as", "mallory"), "mallory"),
        (("cases", "--pair-status", "maybe"), "unknown pair status"),
    ]:
        bad = run_cli(*args, env=env)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_data_page_shows_suspect_pairs_and_label_page_answers_them(
    faulty: SynthSummary, tmp_path: Path
) -> None:
    settings = load_settings()
    settings.ensure_home()
    eng = engine_from_settings(settings)
    upgrade(eng)
    add_user(eng, "alice", "alice-password-1", "labeller")
    import_source(eng, faulty.manifest, report_dir=tmp_path / "reports")
    suspects = flagged_pairs(eng)
    in_eval = [f for f in suspects if f.split in ("val", "test")]

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["wb_user"] = {"username": "alice", "role": "labeller", "via": "password"}
    at.run()
    at.switch_page("app_pages/data.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert next(m.value for m in at.metric if m.label == "Suspect") == str(len(suspects))
    table = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert set(table["case"]) == {f.external_id for f in suspects}
    assert not table["score"].isna().any() and table["reason"].str.len().min() > 10
    warnings = "\n".join(str(w.value) for w in at.warning)
    if in_eval:
        assert "evaluation metrics on their split include them" in warnings
    else:
        assert "evaluation metrics" not in warnings

    # Label page: the labelling queue is empty, the pair checks wait behind a toggle.
    at.switch_page("app_pages/label.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.toggle(key="label_pair_checks").set_value(True).run()
    shown = "\n".join(str(m.value) for m in at.markdown)
    first = suspects[0]  # the highest score is claimed first
    assert f"Pair check, case {first.external_id}" in shown
    at.button(key="btn_pair_ok").click().run()
    assert not at.exception, at.exception
    assert f"Case {first.external_id}: pair confirmed as sound" in "\n".join(str(m.value) for m in at.success)
    with session_scope(eng) as s:
        case = s.get(Case, first.case_id)
        assert case is not None and case.pair_status == "confirmed"
    eng.dispose()
