"""Expert agreement, adjudication and training labels on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from factories import insert_cases
from workbench.active.agreement import agreement_report, record_and_check_disagreement
from workbench.active.labelling_queue import claim_next, enqueue, submit_label, undo_last
from workbench.active.strategies import Selected
from workbench.data.labels import LabelRow, resolve, training_labels
from workbench.db.engine import session_scope
from workbench.db.models import Label, QueueItem

make_cases = insert_cases


def add_labels(engine: Engine, rows: list[tuple[int, int | None, str, str]]) -> None:
    """Append (case_id, value, labeller, source) label rows in order."""
    with session_scope(engine) as s:
        for case_id, value, labeller, source in rows:
            s.add(Label(case_id=case_id, value=value, labeller=labeller, source=source))
            s.flush()


def read(engine: Engine, case_id: int, labeller: str, value: int | None, kind: str = "label") -> object:
    """Queue one item of ``kind`` for the case, let ``labeller`` claim it and answer ``value``."""
    enqueue(engine, [Selected(case_id, "near_threshold", 0.1, "test")], kind=kind)
    item = claim_next(engine, labeller, kinds=[kind])
    assert item is not None and item.case_id == case_id
    return submit_label(engine, item.item_id, labeller, value)


def adjudication_items(engine: Engine) -> list[QueueItem]:
    with session_scope(engine) as s:
        return list(
            s.scalars(select(QueueItem).where(QueueItem.kind == "adjudication").order_by(QueueItem.id))
        )


def test_disagreement_raises_one_adjudication_item(engine: Engine) -> None:
    (case_id,) = make_cases(engine, 1)
    first = read(engine, case_id, "alice", 1)
    assert first.adjudication_item_id is None  # type: ignore[attr-defined]
    assert training_labels(engine) == {case_id: 1}
    second = read(engine, case_id, "bob", 0, kind="second_read")
    (adj,) = adjudication_items(engine)
    assert second.adjudication_item_id == adj.id  # type: ignore[attr-defined]
    assert adj.strategy == "disagreement" and adj.status == "queued"
    assert "alice=Positive" in (adj.reason or "") and "bob=Negative" in (adj.reason or "")
    assert training_labels(engine) == {}  # disputed: kept out of training
    assert record_and_check_disagreement(engine, case_id) is None  # one is already open
    assert len(adjudication_items(engine)) == 1

    # the adjudicator is a third expert: neither reader is offered the item
    assert claim_next(engine, "alice") is None and claim_next(engine, "bob") is None
    carol = claim_next(engine, "carol")
    assert carol is not None and carol.item_id == adj.id
    verdict = submit_label(engine, carol.item_id, "carol", 0)
    assert verdict.source == "adjudication"
    assert training_labels(engine) == {case_id: 0}
    assert record_and_check_disagreement(engine, case_id) is None  # resolved: nothing new


def test_agreeing_experts_need_no_adjudication(engine: Engine) -> None:
    (case_id,) = make_cases(engine, 1)
    read(engine, case_id, "alice", 1)
    res = read(engine, case_id, "bob", 1, kind="second_read")
    assert res.adjudication_item_id is None  # type: ignore[attr-defined]
    assert adjudication_items(engine) == []
    assert training_labels(engine) == {case_id: 1}


def test_undo_that_ends_a_disagreement_cancels_the_unclaimed_adjudication(engine: Engine) -> None:
    (case_id,) = make_cases(engine, 1)
    read(engine, case_id, "alice", 1)
    read(engine, case_id, "bob", 0, kind="second_read")
    assert [a.status for a in adjudication_items(engine)] == ["queued"]
    assert undo_last(engine, "bob") is not None
    assert [a.status for a in adjudication_items(engine)] == ["cancelled"]
    assert training_labels(engine) == {case_id: 1}


def test_training_labels_rules(engine: Engine) -> None:
    a, b, c, d, e = make_cases(engine, 5)
    (v,) = make_cases(engine, 1, split="val")
    add_labels(
        engine,
        [
            (a, 1, "import", "import"),
            (a, 0, "alice", "expert"),  # latest non-null wins over the import label
            (b, None, "alice", "expert"),  # unsure only: nothing to train on
            (c, 1, "alice", "expert"),
            (c, 0, "bob", "expert"),
            (c, 1, "carol", "adjudication"),
            (c, 0, "dave", "expert"),  # a later read does not override the adjudication
            (d, 1, "alice", "expert"),
            (d, None, "alice", "correction"),  # withdrawn by undo
            (e, 0, "import", "import"),
            (e, 1, "alice", "expert"),
            (e, None, "alice", "correction"),  # withdrawn: falls back to the import label
            (v, 1, "import", "import"),
        ],
    )
    assert training_labels(engine) == {a: 0, c: 1, e: 0}
    assert training_labels(engine, splits=("val",)) == {v: 1}
    assert v in training_labels(engine, splits=None)


def test_agreement_report_kappa(engine: Engine) -> None:
    cases = make_cases(engine, 7)
    alice = [1, 1, 0, 0, 1, 0]
    bob = [1, 0, 0, 0, 1, 1]
    rows: list[tuple[int, int | None, str, str]] = []
    for cid, x, y in zip(cases, alice, bob, strict=False):
        rows += [(cid, x, "alice", "expert"), (cid, y, "bob", "expert")]
    rows += [(cases[0], 1, "carol", "expert"), (cases[1], 1, "carol", "expert")]
    rows += [
        (cases[6], 0, "alice", "expert"),
        (cases[6], 1, "bob", "expert"),
        (cases[6], None, "bob", "correction"),
    ]
    add_labels(engine, rows)
    report = {(r.labeller_a, r.labeller_b): r for r in agreement_report(engine)}
    ab = report[("alice", "bob")]
    assert ab.n_common == 6  # the withdrawn read on the 7th case does not count
    po = sum(x == y for x, y in zip(alice, bob, strict=True)) / 6
    pa, pb = sum(alice) / 6, sum(bob) / 6
    pe = pa * pb + (1 - pa) * (1 - pb)
    assert ab.raw_agreement == po and ab.n_agree == 4
    assert abs(ab.kappa - (po - pe) / (1 - pe)) < 1e-12  # type: ignore[operator]
    ac = report[("alice", "carol")]
    assert ac.n_common == 2 and ac.raw_agreement == 1.0 and ac.kappa is None  # all Positive: undefined
    assert ("alice", "dave") not in report


def test_resolve_on_label_histories() -> None:
    def rows(*spec: tuple[int | None, str, str]) -> list[LabelRow]:
        return [LabelRow(i + 1, 9, v, who, src) for i, (v, who, src) in enumerate(spec)]

    assert resolve(rows((1, "a", "expert"), (0, "b", "expert"))).status == "disputed"
    # a labeller who changed their mind has one vote: their latest
    r = resolve(rows((1, "a", "expert"), (0, "a", "expert"), (0, "b", "expert")))
    assert (r.value, r.status, r.votes) == (0, "labelled", {"a": 0, "b": 0})
    r = resolve(rows((1, "a", "expert"), (0, "b", "expert"), (None, "b", "expert")))
    assert (r.value, r.status) == (1, "labelled")  # bob became unsure: no disagreement left
    r = resolve(
        rows((1, "a", "expert"), (0, "b", "expert"), (0, "c", "adjudication"), (None, "c", "correction"))
    )
    assert r.status == "disputed"  # the adjudication was withdrawn
    assert resolve([]).status == "unlabelled"
