"""Relabel items through build_queue: ranked out of fold (reason names the method), or in-sample with why."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine, select

from factories import make_cases, make_version, predict_with_temperature
from workbench.active.building import build_queue
from workbench.calibration.service import calibrate_version
from workbench.config import get_settings
from workbench.db.engine import session_scope
from workbench.db.models import Label, QueueItem
from workbench.model.predictions import write_predictions
from workbench.model.registry import artifact_dir


def _version_with_embeddings(
    engine: Engine, n_train: int, positive_rate: float
) -> tuple[int, dict[str, list[int]]]:
    """A calibrated version (no model file) whose stored embeddings of the train cases are two
    separable clusters by label, plus scored pool/val/test cases."""
    cases = make_cases(engine, {"train": n_train, "val": 60, "test": 20, "pool": 20}, positive_rate, seed=3)
    version = make_version(engine)
    predict_with_temperature(
        engine, version, cases["train"] + cases["val"] + cases["test"] + cases["pool"], 1.0
    )
    calibrate_version(engine, version, ["platt"], "max_f1", n_boot=20)
    from factories import label_of

    y = label_of(engine, cases["train"])
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (n_train, 6)) + np.where(y[:, None] == 1, 3.0, 0.0)
    folder = artifact_dir(get_settings(), version) / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "000000001-999999999.npz",
        case_ids=np.asarray(cases["train"]),
        embedding=emb.astype(np.float32),
    )
    return version, cases


def _relabel_items(engine: Engine) -> dict[int, str]:
    with session_scope(engine) as s:
        return dict(
            s.execute(select(QueueItem.case_id, QueueItem.reason).where(QueueItem.kind == "relabel")).all()
        )


def test_relabel_items_are_out_of_fold_and_name_the_method(engine: Engine) -> None:
    version, cases = _version_with_embeddings(engine, 150, 0.2)
    from factories import label_of

    y = label_of(engine, cases["train"])
    flipped = [cases["train"][int(i)] for i in np.flatnonzero(y == 0)[:2]] + [
        cases["train"][int(np.flatnonzero(y == 1)[0])]
    ]
    with session_scope(engine) as s:  # an expert's wrong label is now the current one
        for cid, old in zip(flipped, label_of(engine, flipped), strict=True):
            s.add(Label(case_id=cid, value=int(1 - old), labeller="expert-a", source="expert"))
    result = build_queue(engine, get_settings(), version, 5, relabel=3)
    items = _relabel_items(engine)
    assert result["relabels"] == 3 and set(items) == set(flipped)
    for reason in items.values():
        assert "out-of-fold p=" in reason and "5-fold logistic regression on stored embeddings" in reason
        assert "cleanlab self-confidence" in reason and "likely" in reason


def test_too_few_positives_falls_back_to_in_sample_scores_and_says_so(engine: Engine) -> None:
    cases = make_cases(engine, {"train": 30, "val": 60, "test": 20, "pool": 20}, 0.2, seed=3)
    with session_scope(engine) as s:  # 3 positive train cases: too few for 5 folds
        for i, cid in enumerate(cases["train"]):
            s.add(Label(case_id=cid, value=int(i < 3), labeller="expert-a", source="expert"))
    version = make_version(engine)
    # a labelled-negative train case the model scores far positive: the in-sample suspect
    write_predictions(engine, version, [cases["train"][5]], np.array([8.0]), np.array([0.9997]), None)
    predict_with_temperature(
        engine, version, cases["train"][6:] + cases["val"] + cases["test"] + cases["pool"], 1.0
    )
    calibrate_version(engine, version, ["platt"], "max_f1", n_boot=20)
    build_queue(engine, get_settings(), version, 5, relabel=2)
    items = _relabel_items(engine)
    assert cases["train"][5] in items
    assert "in-sample score: 3 positive patient(s) labelled, 5-fold needs 5" in items[cases["train"][5]]
