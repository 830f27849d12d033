"""Rows for database tests: cases, labels, a ready model version and its predictions (no model needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine

from workbench.actors import LOCAL_OPERATOR
from workbench.config import Settings
from workbench.db.engine import session_scope
from workbench.db.models import Case, Label, ModelVersion
from workbench.model.predictions import write_predictions

if TYPE_CHECKING:
    from workbench.export.bundle import BundleInfo


def make_cases(
    engine: Engine, splits: dict[str, int], positive_rate: float = 0.1, seed: int = 0, labelled: bool = True
) -> dict[str, list[int]]:
    """Insert cases per split (fake paths) with import labels; pool cases stay unlabelled."""
    rng = np.random.default_rng(seed)
    out = {split: insert_cases(engine, n, split) for split, n in splits.items()}
    with session_scope(engine) as s:
        for split, ids in out.items():
            if labelled and split != "pool":
                for cid in ids:
                    value = int(rng.random() < positive_rate)
                    s.add(Label(case_id=cid, value=value, labeller="import:0", source="import"))
    return out


def make_version(engine: Engine, status: str = "ready") -> int:
    with session_scope(engine) as s:
        v = ModelVersion(preset="cpu", backbone="small_cnn", config={}, status=status)
        s.add(v)
        s.flush()
        return v.id


def label_of(engine: Engine, case_ids: list[int]) -> np.ndarray:
    from workbench.data.labels import current_labels

    with session_scope(engine) as s:
        cur = current_labels(s, case_ids)
    return np.array([np.nan if cur.get(c) is None else cur[c] for c in case_ids], dtype=float)


def predict_with_temperature(
    engine: Engine, version_id: int, case_ids: list[int], temperature: float, seed: int = 0
) -> None:
    """Store predictions whose logits are informative but over-confident by ``temperature``."""
    rng = np.random.default_rng(seed)
    y = label_of(engine, case_ids)
    y_known = np.where(np.isnan(y), rng.random(len(y)) < 0.1, y)
    # Class-conditional N(+1, 1) / N(-1, 1) scores at 10% prevalence: the true log-odds is 2z - ln 9.
    z = rng.normal(0, 1, len(case_ids)) + np.where(y_known == 1, 1.0, -1.0)
    logit = (2 * z - np.log(9)) * temperature
    p = 1 / (1 + np.exp(-logit))
    write_predictions(engine, version_id, case_ids, logit, p, np.full(len(case_ids), 0.01))


def insert_cases(engine: Engine, n: int, split: str = "pool") -> list[int]:
    """Insert ``n`` unlabelled cases of one split (fake image paths: queue tests never open them)."""
    import uuid

    tag = uuid.uuid4().hex[:8]
    with session_scope(engine) as s:
        cases = []
        for i in range(n):
            h = hashlib.sha256(f"{tag}/{i}".encode()).hexdigest()
            cases.append(
                Case(
                    external_id=f"{split}-{tag}-{i:04d}",
                    patient_id=f"P{i}",
                    pre_path=f"/img/{tag}/{i}/pre.jpg",
                    post_path=f"/img/{tag}/{i}/post.jpg",
                    pre_sha256=h,
                    post_sha256=h[::-1],
                    pair_sha256=h,
                    pre_width=64,
                    pre_height=64,
                    post_width=64,
                    post_height=64,
                    split=split,
                )
            )
        s.add_all(cases)
        s.flush()
        return [c.id for c in cases]


# A tiny small_cnn at 32x32, one epoch: plumbing for export tests, on too little data to learn from
# (the learning check is recorded, not enforced).
TINY_TRAIN = {
    "preset": "cpu",
    "epochs": 1,
    "overrides": {
        "model": {"input_size": [32, 32], "token_dim": 8, "heads": 2, "key_dim": 4, "cnn_width": 4},
        "train": {"phase1_batch": 8, "augment": False, "learning_check": "warn"},
    },
}


def exported_tiny_bundle(
    root: Path, n_boot: int, model: dict | None = None
) -> tuple[Engine, Settings, int, BundleInfo]:
    """A SQLite workbench under ``root`` with 30 synthetic pairs, a tiny trained, scored and calibrated
    version and its exported bundle (``root/bundle``): (engine, settings, version id, bundle info).
    ``model``: further model-config overrides."""
    from workbench.calibration.service import calibrate_version
    from workbench.data.importer import import_source
    from workbench.data.synth import generate_dataset
    from workbench.db.engine import create_db_engine
    from workbench.db.schema import upgrade
    from workbench.export.bundle import export_bundle
    from workbench.jobs.params import TrainParams
    from workbench.model.registry import train_version
    from workbench.model.scoring import infer_version

    settings = Settings(
        home=root / "home", artifact_root=str(root / "artifacts"), database_url=f"sqlite:///{root / 'wb.db'}"
    )
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    data = generate_dataset(
        root / "data", n=30, positive_rate=0.3, size=(48, 48), image_format="png", difficulty="easy"
    )
    import_source(engine, data.manifest)
    params = {**TINY_TRAIN, "overrides": {**TINY_TRAIN["overrides"]}}
    params["overrides"]["model"] = {**TINY_TRAIN["overrides"]["model"], **(model or {})}
    version_id = train_version(engine, settings, TrainParams.parse(params))["model_version"]
    infer_version(engine, settings, version_id, ["train", "val", "test"], mc_samples=0)
    calibrate_version(engine, version_id, n_boot=n_boot)
    info = export_bundle(engine, settings, version_id, root / "bundle", actor=LOCAL_OPERATOR, make_zip=True)
    return engine, settings, version_id, info
