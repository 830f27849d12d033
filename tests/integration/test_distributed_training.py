"""Multi-device training through the registry, on a CPU split into two logical devices.

The split must happen before TensorFlow initialises its devices, so training runs in a fresh
process with ``WORKBENCH_DISTRIBUTE=cpu:2``; this process then reads what that run stored and loads
its models without any strategy.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from workbench.config import Settings, load_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import create_db_engine, session_scope
from workbench.db.models import Case, ModelVersion
from workbench.db.schema import upgrade
from workbench.errors import SettingsError, ValidationError
from workbench.model.distribution import choose_distribution, parse_mode, split_cpu

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "model": {"input_size": [32, 32], "token_dim": 8, "heads": 2, "key_dim": 4, "cnn_width": 4},
    # plumbing on too little data to learn from: the learning check is recorded, not enforced
    "train": {"phase1_batch": 4, "phase2_batch": 4, "patience": 100, "learning_check": "warn"},
}
# A parent trained end to end, then a child warm-started from it: phase 1 on cached backbone
# features (head only), phase 2 fine-tuning the full model; both under the two-replica strategy.
SCRIPT = """
import json, sys
from workbench.config import Settings
from workbench.db.engine import create_db_engine
from workbench.jobs.params import TrainParams
from workbench.model.registry import train_version

tiny = json.loads(sys.argv[1])
engine = create_db_engine(Settings().db_url)
parent = train_version(engine, Settings(), TrainParams(preset="cpu", epochs=1, overrides=tiny))
child = train_version(engine, Settings(), TrainParams(
    preset="cpu", phases=2, epochs=1, fine_tune_epochs=1, overrides=tiny,
    parent_version=parent["model_version"], use_feature_cache=True))
print(json.dumps({"parent": parent["model_version"], "child": child["model_version"]}))
"""


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("distributed")
    settings = Settings(home=root / "home", database_url=f"sqlite:///{root / 'wb.db'}")
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    data = generate_dataset(
        root / "data", n=48, positive_rate=0.3, seed=4, size=(40, 40), unlabelled_fraction=0.25
    )
    import_source(engine, data.manifest)
    yield engine, settings
    engine.dispose()


def _train_on_two_logical_cpus(settings: Settings) -> dict[str, int]:
    env = {
        **os.environ,
        "WORKBENCH_DISTRIBUTE": "cpu:2",
        "WORKBENCH_HOME": str(settings.home),
        "WORKBENCH_DATABASE_URL": settings.db_url,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(TINY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_two_replica_training_records_its_scaling_and_its_models_load_back(wb) -> None:  # type: ignore[no-untyped-def]
    engine, settings = wb
    ids = _train_on_two_logical_cpus(settings)
    with session_scope(engine) as s:
        versions = {name: s.get(ModelVersion, vid) for name, vid in ids.items()}
        training = {name: v.metrics["training"] for name, v in versions.items()}
        assert all(v.status == "ready" and Path(v.artifact_uri).is_file() for v in versions.values())
        pool = s.scalars(select(Case).where(Case.split == "pool").order_by(Case.id)).all()
        pool_pairs = [(c.pre_path, c.post_path) for c in pool]

    for name, record in training.items():
        dist = record["distribution"]
        assert dist["strategy"] == "MirroredStrategy" and dist["mode"] == "cpu:2"
        assert dist["replicas"] == 2 and len(dist["devices"]) == 2
        for phase in dist["phases"].values():
            assert phase["per_replica_batch"] == 4 and phase["global_batch"] == 8
            assert phase["scaled_lr"] == pytest.approx(phase["lr"] * math.sqrt(2))
        # The optimizer ran at the scaled rate, and the loss stayed finite in every phase.
        hist = record["history"]
        assert hist["phase1"]["learning_rate"][0] == pytest.approx(dist["phases"]["1"]["scaled_lr"], rel=1e-5)
        assert all(math.isfinite(x) for phase in hist.values() for x in phase["loss"]), name
    assert set(training["child"]["distribution"]["phases"]) == {"1", "2"}
    assert training["child"]["used_feature_cache"] is True  # head-only phase under the strategy

    # The stored models load and predict in a plain (one-device) process: this one.
    from workbench.model.inference import predict_pairs
    from workbench.model.registry import load_version_model

    for vid in ids.values():
        logits = predict_pairs(load_version_model(engine, vid), pool_pairs)["logit"]
        assert logits.shape[0] == len(pool_pairs) and np.all(np.isfinite(logits))


def test_one_device_strategy_keeps_batch_and_rate_and_bad_modes_are_refused() -> None:
    dist = choose_distribution("off")
    assert dist.replicas == 1 and dist.strategy_name == "default"
    assert dist.batch_for(16, 5) == 16  # one replica: a small set needs no rounding
    assert dist.record({1: (16, 1e-3)}, n_train=100)["phases"]["1"] == {
        "per_replica_batch": 16,
        "global_batch": 16,
        "lr": 1e-3,
        "scaled_lr": 1e-3,
    }
    assert parse_mode(" CPU:3 ") == "cpu:3"
    assert load_settings().distribute == "auto"
    for bad in ("cpu:1", "gpu", "cpu:x", ""):
        with pytest.raises(SettingsError, match="WORKBENCH_DISTRIBUTE: .* is not a distribution mode"):
            load_settings(distribute=bad)
        with pytest.raises(ValidationError, match="WORKBENCH_DISTRIBUTE: .* is not a distribution mode"):
            parse_mode(bad)
    # TensorFlow is initialised by now (choose_distribution listed the devices): too late to split.
    with pytest.raises(ValidationError, match="already initialised its devices"):
        split_cpu(3)


def test_batches_leave_no_replica_an_empty_last_batch() -> None:
    """Two replicas: the first batch splits evenly and a last partial batch holds at least one example
    per replica (an empty replica batch fails batch normalisation)."""
    from types import SimpleNamespace

    from workbench.model.distribution import Distribution

    two = Distribution(SimpleNamespace(num_replicas_in_sync=2), "cpu:2", ("/cpu:0", "/cpu:1"))
    for n in range(2, 60):
        for per_replica in (1, 2, 4, 8):
            b = two.batch_for(per_replica, n)
            assert b % 2 == 0 and b <= max(2 * per_replica, 2), (n, per_replica, b)
            assert n % b == 0 or n % b >= 2 or b == 2, (n, per_replica, b)  # 2: nothing smaller splits
    assert two.batch_for(4, 9) == 6  # 9 = 8 + 1 would leave a replica nothing; 6 + 3 does not
