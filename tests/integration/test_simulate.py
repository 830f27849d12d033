"""Simulation mode on a tiny real synthetic data set (80 pairs at 32x32, tiny model, 2 rounds of 5)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from workbench.active.strategies import DEFAULT_MIX
from workbench.data.synth import generate_dataset
from workbench.errors import ValidationError
from workbench.experiments import (
    CURVE_COLUMNS,
    QUERY_COLUMNS,
    SUMMARY_COLUMNS,
    load_labelled,
    parse_strategy,
    prevalence_threshold,
    simulate,
    split_for_seed,
)

TINY_MODEL = {"input_size": [32, 32], "token_dim": 8, "heads": 2, "key_dim": 4, "cnn_width": 4}
RUN = dict(
    strategies=["likely_positive", "random"],
    rounds=2,
    batch=5,
    initial=12,
    seeds=[0],
    model_overrides=TINY_MODEL,
    feature_epochs=2,
    head_epochs=3,
    mc_samples=4,
)


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "data"
    generate_dataset(root, n=80, positive_rate=0.1, seed=3, size=(32, 32), difficulty="easy")
    return root


@pytest.fixture(scope="module")
def run(synth: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim") / "out"
    events: list[tuple[float, str]] = []
    result = simulate(synth, out, progress=lambda f, m: events.append((f, m)), **RUN)
    return result, out, events


def test_load_labelled_prefers_ground_truth_next_to_a_synth_manifest(tmp_path: Path) -> None:
    root = tmp_path / "d"
    summary = generate_dataset(
        root, n=12, positive_rate=0.25, seed=1, size=(32, 32), unlabelled_fraction=0.5, difficulty="easy"
    )
    assert summary.labelled < summary.n  # the manifest hides some labels
    cases, source = load_labelled(root)
    assert source.endswith("ground_truth.csv")
    assert len(cases) == 12 and sum(c.label for c in cases) == summary.positives
    assert all(c.pre.is_file() and c.post.is_file() for c in cases)


def test_unlabelled_rows_without_ground_truth_are_refused(tmp_path: Path) -> None:
    rows = []
    for i in range(4):
        d = tmp_path / f"c{i}"
        d.mkdir()
        for side in ("pre", "post"):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(d / f"{side}.png")
        rows.append(f"c{i},c{i}/pre.png,c{i}/post.png,{'' if i == 3 else i % 2}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,pre_path,post_path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValidationError, match=r"1 case\(s\).*no label \(c3\)"):
        load_labelled(manifest)
    with pytest.raises(ValidationError, match="no label"):
        simulate(manifest, tmp_path / "out", rounds=1, batch=1, initial=2, seeds=1)


def test_split_keeps_patients_apart_and_seeds_two_positives(synth: Path) -> None:
    cases, _ = load_labelled(synth)
    y = [c.label for c in cases]
    patients = [c.patient_id for c in cases]
    sp = split_for_seed(y, patients, seed=0, initial=12, test_fraction=0.25)
    test_patients = {patients[i] for i in sp.test}
    assert not test_patients & {patients[i] for i in sp.pool}
    assert set(sp.initial) <= set(sp.pool)
    assert len(sp.initial) == 12 and np.asarray(y)[sp.initial].sum() >= 2
    assert 0.15 <= len(sp.test) / len(cases) <= 0.35
    again = split_for_seed(y, patients, seed=0, initial=12, test_fraction=0.25)
    assert np.array_equal(sp.initial, again.initial) and np.array_equal(sp.test, again.test)
    other = split_for_seed(y, patients, seed=1, initial=12, test_fraction=0.25)
    assert not np.array_equal(sp.initial, other.initial)


def test_prevalence_threshold_flags_the_expected_number() -> None:
    prob = np.linspace(0.0, 1.0, 101)
    t = prevalence_threshold(prob, 0.1)
    assert int((prob >= t).sum()) == 11  # ceil(0.1 x 101)
    assert prevalence_threshold(prob, 0.0) == 1.0  # at least one case is flagged


def test_parse_strategy() -> None:
    assert parse_strategy("mixed") == dict(DEFAULT_MIX)
    assert parse_strategy("entropy") == {"entropy": 1.0}
    assert parse_strategy("near_threshold=0.6+likely_positive=0.4") == {
        "near_threshold": 0.6,
        "likely_positive": 0.4,
    }
    with pytest.raises(ValidationError, match="unknown strategy 'nope'"):
        parse_strategy("nope")
    with pytest.raises(ValidationError, match="sum to 1"):
        parse_strategy("random=0.5+entropy=0.2")
    with pytest.raises(ValidationError, match="cannot be simulated"):
        parse_strategy("tta_spread")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategies": ["random", "bogus"]}, "unknown strategy 'bogus'"),
        ({"batch": 100}, r"initial \+ rounds x batch .* pool of seed 0 holds only"),
        ({"initial": 500}, "initial .500. is larger than the pool"),
        ({"rounds": 0}, "rounds must be an integer >= 1"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
        ({"mc_samples": 1}, "mc_samples must be 0"),
        ({"strategies": ["bald"], "mc_samples": 0}, "'bald' needs MC-dropout samples"),
        ({"test_fraction": 0.9}, "test_fraction must be between"),
    ],
)
def test_bad_inputs_raise(synth: Path, tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        simulate(synth, tmp_path / "out", **{**RUN, **overrides})
    assert not (tmp_path / "out" / "curves.csv").exists()


def test_settings_are_checked_before_the_data_set_is_read(tmp_path: Path) -> None:
    """A bad setting is named even when the data set is missing too, and no output folder is made."""
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ValidationError, match="head_batch must be an integer >= 1"):
        simulate(missing, tmp_path / "out", **{**RUN, "head_batch": 0})
    with pytest.raises(ValidationError, match="unknown preset .nope."):
        simulate(missing, tmp_path / "out", **{**RUN, "preset": "nope"})
    assert not (tmp_path / "out").exists()


def test_importing_the_simulator_does_not_load_tensorflow() -> None:
    """The CLI imports the package at start-up: TensorFlow must load only when a simulation runs."""
    import subprocess
    import sys

    code = "import sys, workbench.experiments; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_outputs_have_the_documented_columns(run) -> None:
    result, out, events = run
    header, rows = _read(out / "curves.csv")
    assert header == list(CURVE_COLUMNS)
    assert len(rows) == 2 * (2 + 1)  # two strategies x (initial + 2 rounds)
    assert _read(out / "summary.csv")[0] == list(SUMMARY_COLUMNS)
    assert _read(out / "queries.csv")[0] == list(QUERY_COLUMNS)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((out / "features").rglob("*.npy")), "backbone features are cached under OUT/features"
    assert events and events[-1][0] == 1.0
    table = result.summary_table()
    assert "likely_positive" in table and "random" in table and "x random" in table


def test_curves_grow_by_batch_and_count_positives_honestly(run, synth: Path) -> None:
    result, out, _ = run
    cases, _ = load_labelled(synth)
    label_of = {c.case_id: c.label for c in cases}
    _, rows = _read(out / "curves.csv")
    _, queries = _read(out / "queries.csv")
    test_pos = {int(r["test_positives"]) for r in rows}
    assert len(test_pos) == 1
    pool_positives = sum(label_of.values()) - test_pos.pop()
    for name in ("likely_positive", "random"):
        mine = sorted((r for r in rows if r["strategy"] == name), key=lambda r: int(r["round"]))
        assert [int(r["labels_used"]) for r in mine] == [12, 17, 22]
        assert [int(r["queried"]) for r in mine] == [0, 5, 10]
        found = [int(r["positives_found"]) for r in mine]
        assert found == sorted(found) and found[-1] <= pool_positives and found[0] >= 2
        picked = [q for q in queries if q["strategy"] == name]
        assert len(picked) == 10 and len({q["case_id"] for q in picked}) == 10
        assert all(int(q["label"]) == label_of[q["case_id"]] for q in picked)
        assert found[-1] - found[0] == sum(int(q["label"]) for q in picked)
        for r in mine:
            assert 0.0 <= float(r["test_auprc"]) <= 1.0 and 0.0 <= float(r["test_auroc"]) <= 1.0


def test_queries_never_touch_the_test_set_or_the_initial_set(run, synth: Path) -> None:
    _, out, _ = run
    cases, _ = load_labelled(synth)
    sp = split_for_seed([c.label for c in cases], [c.patient_id for c in cases], 0, 12, 0.25)
    forbidden = {cases[i].case_id for i in np.concatenate([sp.test, sp.initial])}
    _, queries = _read(out / "queries.csv")
    assert queries and not {q["case_id"] for q in queries} & forbidden


def test_strategies_share_round_zero_but_choose_differently(run) -> None:
    _, out, _ = run
    _, rows = _read(out / "curves.csv")
    zero = {r["strategy"]: r for r in rows if r["round"] == "0"}
    assert zero["likely_positive"]["test_auprc"] == zero["random"]["test_auprc"]
    _, queries = _read(out / "queries.csv")
    chosen = {name: {q["case_id"] for q in queries if q["strategy"] == name} for name in zero}
    assert chosen["likely_positive"] != chosen["random"]
    assert {q["chosen_by"] for q in queries if q["strategy"] == "likely_positive"} == {"likely_positive"}


def test_cli_repeats_the_run_exactly(run, synth: Path, tmp_path: Path) -> None:
    """Same seed, same inputs through the CLI: identical curves and queries (and a printed table)."""
    import typer

    from workbench_cli.simulate import simulate as simulate_cmd

    _, first, _ = run
    app = typer.Typer()
    app.command()(simulate_cmd)
    out = tmp_path / "again"
    args = [str(synth), "--out", str(out), "-s", "likely_positive,random", "--rounds", "2", "--batch", "5"]
    args += ["--initial", "12", "--seeds", "1", "--input-size", "32x32", "--feature-epochs", "2"]
    args += ["--head-epochs", "3", "--mc-samples", "4"]
    for key in ("token_dim", "heads", "key_dim", "cnn_width"):
        args += ["--model-override", f"{key}={TINY_MODEL[key]}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Positives found per 100 queries" in res.stdout
    assert (out / "curves.csv").read_text() == (first / "curves.csv").read_text()
    assert (out / "queries.csv").read_text() == (first / "queries.csv").read_text()


def test_cli_bad_input_is_one_line(synth: Path, tmp_path: Path) -> None:
    import typer

    from workbench_cli.simulate import simulate as simulate_cmd

    app = typer.Typer()
    app.command()(simulate_cmd)
    res = CliRunner().invoke(app, [str(synth), "--out", str(tmp_path / "o"), "-s", "magic"])
    assert res.exit_code == 1
    assert res.stderr.strip().startswith("error: unknown strategy 'magic'")
    assert len(res.stderr.strip().splitlines()) == 1
