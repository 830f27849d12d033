"""Tests for the synthetic pre/post pair generator (real files in tmp_path, small sizes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from workbench.data.synth import TRUTH_COLUMNS, SynthSummary, generate_dataset, parse_size
from workbench.errors import ValidationError

PARAMS = dict(n=30, positive_rate=0.2, seed=3, size=(64, 64), unlabelled_fraction=0.2)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _whiteness(path: Path) -> np.ndarray:
    """Brightness x (1 - saturation) in HSV terms, which is the minimum RGB channel, in 0..1."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return rgb.min(axis=2) / 255.0


def _box_mean(a: np.ndarray, k: int) -> np.ndarray:
    c = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate_dataset(tmp_path_factory.mktemp("synth") / "out", **PARAMS)


def test_summary_matches_files(dataset: SynthSummary) -> None:
    header, truth = _read_csv(dataset.ground_truth)
    assert header == list(TRUTH_COLUMNS)
    assert header[:2] == ["case_id", "label"] and "patient_id" in header
    assert dataset.n == len(truth) == 30
    assert dataset.positives == sum(int(r["label"]) for r in truth) == 6
    assert dataset.patients == len({r["patient_id"] for r in truth})
    assert (dataset.root / "README.txt").read_text().count("does not model") == 1
    params = json.loads((dataset.root / "synth.json").read_text())
    assert params["n"] == 30 and params["seed"] == 3 and params["size"] == [64, 64]
    assert params["difficulty"] == "realistic" and params["label_noise"] == 0.0 and params["sites"] == 1
    assert params["reference_auroc"]["truth"] == dataset.reference_auroc
    assert dataset.difficulty == "realistic" and 0.5 <= dataset.reference_auroc <= 1.0


def test_manifest_and_ground_truth_agree(dataset: SynthSummary) -> None:
    header, manifest = _read_csv(dataset.manifest)
    assert header == ["case_id", "pre_path", "post_path", "label", "patient_id"]
    _, truth = _read_csv(dataset.ground_truth)
    assert [r["case_id"] for r in manifest] == [r["case_id"] for r in truth]
    assert [r["case_id"] for r in truth] == [f"synth-{i:05d}" for i in range(1, 31)]
    for m, t in zip(manifest, truth, strict=True):
        assert m["patient_id"] == t["patient_id"]
        assert t["label"] in ("0", "1")
        assert m["label"] in ("", t["label"])


def test_unlabelled_fraction_is_stratified(dataset: SynthSummary) -> None:
    _, manifest = _read_csv(dataset.manifest)
    _, truth = _read_csv(dataset.ground_truth)
    unlabelled = [t for m, t in zip(manifest, truth, strict=True) if m["label"] == ""]
    labelled = [m for m in manifest if m["label"] != ""]
    assert len(unlabelled) == round(30 * 0.2)
    assert dataset.labelled == len(labelled) == 24
    assert {m["label"] for m in labelled} == {"0", "1"}
    # Stratified: the unlabelled share of positives matches the overall rate (6 of 30 -> about 1 of 6).
    assert sum(int(t["label"]) for t in unlabelled) == 1


def test_patient_ids_group_cases(dataset: SynthSummary) -> None:
    _, truth = _read_csv(dataset.ground_truth)
    ids = [r["patient_id"] for r in truth]
    assert all(pid.startswith("patient-") and len(pid) == len("patient-0001") for pid in ids)
    assert dataset.patients == round(30 / 1.3)
    assert max(ids.count(pid) for pid in set(ids)) >= 2


def test_paths_relative_existing_and_images_decode(dataset: SynthSummary) -> None:
    _, manifest = _read_csv(dataset.manifest)
    for row in manifest:
        for key, stem in (("pre_path", "pre"), ("post_path", "post")):
            rel = row[key]
            assert rel == f"cases/{row['case_id']}/{stem}.jpg"
            assert not Path(rel).is_absolute() and ".." not in Path(rel).parts
            path = dataset.manifest.parent / rel
            with Image.open(path) as img:
                assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 64)
                assert not img.info.get("exif")


def test_non_square_size_is_width_by_height_and_png(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "out", n=3, positive_rate=0.5, size=(48, 40), image_format="png")
    _, manifest = _read_csv(summary.manifest)
    for row in manifest:
        with Image.open(summary.root / row["post_path"]) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (48, 40)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(
    dataset: SynthSummary, tmp_path: Path
) -> None:
    again = generate_dataset(tmp_path / "again", **PARAMS)
    assert _all_files(again.root) == _all_files(dataset.root)
    other = generate_dataset(tmp_path / "other", **{**PARAMS, "seed": 4})
    first = "cases/synth-00001/pre.jpg"
    assert (other.root / first).read_bytes() != (dataset.root / first).read_bytes()
    assert _all_files(other.root)["ground_truth.csv"] != _all_files(dataset.root)["ground_truth.csv"]


@pytest.mark.parametrize(
    ("n", "rate", "expected"),
    [(30, 0.2, 6), (7, 0.01, 1), (5, 0.0, 0), (4, 1.0, 4), (11, 0.5, round(11 * 0.5))],
)
def test_exact_positive_count(tmp_path: Path, n: int, rate: float, expected: int) -> None:
    summary = generate_dataset(tmp_path / "out", n=n, positive_rate=rate, size=(32, 32))
    _, truth = _read_csv(summary.ground_truth)
    assert summary.positives == sum(int(r["label"]) for r in truth) == expected


def _rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def test_lesion_whitening_is_larger_for_positives(tmp_path: Path) -> None:
    """Post-minus-pre whiteness over the region that whitens most is larger for positives, on average,
    and separates the classes better than the whiteness of the post image alone."""
    summary = generate_dataset(
        tmp_path / "out", n=40, positive_rate=0.5, seed=0, size=(64, 64), difficulty="easy"
    )
    _, manifest = _read_csv(summary.manifest)
    truth = {r["case_id"]: int(r["label"]) for r in _read_csv(summary.ground_truth)[1]}
    labels, increase, post_only = [], [], []
    for row in manifest:
        k = 5  # ~8% of 64 px: about the size of a small lesion
        pre = _box_mean(_whiteness(summary.root / row["pre_path"]), k)
        post = _box_mean(_whiteness(summary.root / row["post_path"]), k)
        diff = post - pre
        labels.append(truth[row["case_id"]])
        increase.append(float(diff.max() - np.median(diff)))  # median removes the global exposure drift
        post_only.append(float(post.max()))
    y, inc, post_white = np.array(labels), np.array(increase), np.array(post_only)
    assert (y == 1).sum() == 20
    assert inc[y == 1].mean() > inc[y == 0].mean() + 0.03
    assert _rank_auc(inc, y) > _rank_auc(post_white, y) + 0.05


def test_existing_complete_output_is_reused(dataset: SynthSummary) -> None:
    image = dataset.root / "cases/synth-00002/post.jpg"
    before = image.stat().st_mtime_ns
    again = generate_dataset(dataset.root, **PARAMS)
    assert again == dataset
    assert image.stat().st_mtime_ns == before


def test_different_parameters_in_existing_output_are_refused(dataset: SynthSummary) -> None:
    with pytest.raises(ValidationError, match="different parameters.*seed.*choose an empty folder"):
        generate_dataset(dataset.root, **{**PARAMS, "seed": 99})


def test_foreign_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match="notes.txt.*choose an empty folder"):
        generate_dataset(tmp_path, n=3, size=(32, 32))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_interrupted_output_is_regenerated(tmp_path: Path) -> None:
    params = dict(n=6, positive_rate=0.5, seed=1, size=(32, 32))
    reference = _all_files(generate_dataset(tmp_path / "ref", **params).root)
    out = generate_dataset(tmp_path / "out", **params).root
    (out / "synth.json").unlink()  # as if the run stopped before finishing
    (out / "cases/synth-00004/post.jpg").unlink()
    (out / "cases/synth-00005/pre.jpg.synth-tmp").write_bytes(b"partial")
    summary = generate_dataset(out, **params)
    assert summary.n == 6 and _all_files(out) == reference


def test_interrupted_output_with_foreign_file_is_refused(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "out", n=3, size=(32, 32)).root
    (out / "synth.json").unlink()
    (out / "cases" / "synth-00001" / "mask.png").write_bytes(b"x")
    with pytest.raises(ValidationError, match="mask.png"):
        generate_dataset(out, n=3, size=(32, 32))
    assert (out / "cases" / "synth-00001" / "mask.png").exists()


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ValidationError, match="not a folder"):
        generate_dataset(target, n=3, size=(32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n \\(number of cases\\)"),
        ({"n": 1_000_001}, "n \\(number of cases\\)"),
        ({"n": 2.5}, "integer"),
        ({"positive_rate": -0.1}, "positive_rate"),
        ({"positive_rate": 1.5}, "positive_rate"),
        ({"unlabelled_fraction": 1.0}, "unlabelled_fraction"),
        ({"unlabelled_fraction": -0.2}, "unlabelled_fraction"),
        ({"size": (31, 64)}, "width must be between 32 and 4096"),
        ({"size": (64, 4097)}, "height must be between 32 and 4096"),
        ({"size": (64,)}, "size"),
        ({"image_format": "gif"}, "image_format"),
        ({"cases_per_patient": 0.5}, "cases_per_patient"),
        ({"seed": -1}, "seed"),
        ({"difficulty": "nope"}, "difficulty must be one of easy, realistic, hard"),
        ({"difficulty": 3}, "difficulty"),
        ({"label_noise": 0.5}, "label_noise"),
        ({"label_noise": -0.1}, "label_noise"),
        ({"label_noise": "0.1"}, "label_noise"),
        ({"sites": 0}, "sites must be an integer between 1 and 16"),
        ({"sites": 17}, "sites"),
        ({"sites": 2.0}, "sites"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"n": 3, "size": (32, 32), **kwargs}
    with pytest.raises(ValidationError, match=message):
        generate_dataset(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "expected"), [("128x96", (128, 96)), ("64X64", (64, 64)), (" 200 ", (200, 200))]
)
def test_parse_size(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "128x", "x96", "12.5x64", "abc", "16x16", "5000x64", "-64x64"])
def test_parse_size_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_size(text)


def test_complete_looking_output_with_missing_image_is_regenerated(tmp_path: Path) -> None:
    params = dict(n=4, positive_rate=0.5, seed=2, size=(32, 32))
    out = generate_dataset(tmp_path / "out", **params).root
    reference = _all_files(out)
    (out / "cases/synth-00003/pre.jpg").unlink()
    generate_dataset(out, **params)
    assert _all_files(out) == reference


# --------------------------------------------------------------------------------------------------------
# Difficulty levels, label noise, sites
# --------------------------------------------------------------------------------------------------------

#: Pixel sums of the version-1 generator (before difficulty levels) for n=3, rate 0.5, seed 0, 32x32.
EASY_V1_PIXEL_SUMS = [193748, 188324, 171231, 178087, 190499, 220762]

LEVEL_PARAMS = dict(n=120, positive_rate=0.25, seed=7, size=(32, 32), cases_per_patient=2.0)


@pytest.fixture(scope="module")
def levels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("levels")
    return {
        level: _read_csv(generate_dataset(root / level, difficulty=level, **LEVEL_PARAMS).ground_truth)[1]
        for level in ("easy", "realistic", "hard")
    }


def _strengths(rows: list[dict[str, str]]) -> tuple[float, float]:
    """(weakest lesion among positives, strongest post-only look-alike among negatives)."""
    lesion = min(float(r["lesion_strength"]) for r in rows if r["label"] == "1")
    lookalike = max(float(r["lookalike_strength"]) for r in rows if r["label"] == "0")
    return lesion, lookalike


@pytest.mark.parametrize("level", ["realistic", "hard"])
def test_realistic_and_hard_lesions_overlap_lookalikes(levels: dict, level: str) -> None:
    rows = levels[level]
    lesion, lookalike = _strengths(rows)
    assert lookalike > lesion
    # Continuous strengths and sizes, ranging from faint to dense.
    strengths = sorted(float(r["lesion_strength"]) for r in rows if r["label"] == "1")
    assert strengths[0] < 0.35 and strengths[-1] > 0.7 and len(set(strengths)) == len(strengths)
    assert all(float(r["lesion_area"]) > 0 for r in rows if r["label"] == "1")
    assert all(float(r["lesion_area"]) == float(r["lesion_strength"]) == 0 for r in rows if r["label"] == "0")


def test_easy_lesions_do_not_overlap_lookalikes(levels: dict) -> None:
    lesion, lookalike = _strengths(levels["easy"])
    assert lesion > lookalike + 0.2


def test_hard_evidence_is_less_separable_than_easy(tmp_path: Path) -> None:
    easy = generate_dataset(tmp_path / "easy", difficulty="easy", **LEVEL_PARAMS)
    hard = generate_dataset(tmp_path / "hard", difficulty="hard", **LEVEL_PARAMS)
    assert easy.reference_auroc == 1.0
    assert hard.reference_auroc is not None and 0.7 < hard.reference_auroc <= 1.0
    assert hard.reference_auroc_recorded == hard.reference_auroc  # no label noise


def test_easy_keeps_version_1_pixels(tmp_path: Path) -> None:
    """A fingerprint of generator version 1 output: easy must keep drawing the same pixels."""
    summary = generate_dataset(
        tmp_path / "out", n=3, positive_rate=0.5, seed=0, size=(32, 32), difficulty="easy"
    )
    pixels = [
        np.asarray(Image.open(summary.root / f"cases/synth-0000{i}/{stem}.jpg")).astype(np.int64).sum()
        for i in (1, 2, 3)
        for stem in ("pre", "post")
    ]
    assert pixels == EASY_V1_PIXEL_SUMS


@pytest.mark.parametrize("level", ["easy", "realistic", "hard"])
def test_label_noise_flips_exactly_the_rate(tmp_path: Path, level: str) -> None:
    summary = generate_dataset(
        tmp_path / "out",
        n=60,
        positive_rate=0.2,
        seed=5,
        size=(32, 32),
        unlabelled_fraction=0.25,
        label_noise=0.1,
        difficulty=level,
    )
    _, truth = _read_csv(summary.ground_truth)
    _, manifest = _read_csv(summary.manifest)
    labelled = [(m, t) for m, t in zip(manifest, truth, strict=True) if m["label"] != ""]
    assert len(labelled) == summary.labelled == 45
    assert sum(m["label"] != t["label"] for m, t in labelled) == round(0.1 * 45)
    assert all(m["label"] == t["recorded_label"] for m, t in zip(manifest, truth, strict=True))
    assert summary.positives == sum(int(t["label"]) for t in truth) == 12  # the truth keeps the rate
    assert summary.reference_auroc_recorded is not None
    assert summary.reference_auroc_recorded < summary.reference_auroc


def test_sites_column_and_patients_belong_to_one_site(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "out", n=60, seed=2, size=(40, 32), sites=3, cases_per_patient=2.0)
    _, truth = _read_csv(summary.ground_truth)
    assert {r["site"] for r in truth} == {"site-1", "site-2", "site-3"}
    site_of: dict[str, set[str]] = {}
    for r in truth:
        site_of.setdefault(r["patient_id"], set()).add(r["site"])
    assert all(len(sites) == 1 for sites in site_of.values())
    header, _ = _read_csv(summary.manifest)
    assert "site" not in header  # the importer refuses unknown manifest columns
    with Image.open(summary.root / "cases/synth-00001/pre.jpg") as img:
        assert img.size == (40, 32)
    one = _read_csv(generate_dataset(tmp_path / "one", n=10, size=(32, 32)).ground_truth)[1]
    assert {r["site"] for r in one} == {"site-1"}


def test_patients_with_several_visits_cluster_positives(levels: dict) -> None:
    for level in ("realistic", "hard"):
        rows = levels[level]
        visits: dict[str, list[int]] = {}
        for r in rows:
            visits.setdefault(r["patient_id"], []).append(int(r["label"]))
        several = [v for v in visits.values() if len(v) >= 2]
        assert len(several) >= 10
        # Positives cluster: more multi-visit patients are all-positive or all-negative than with
        # independent labels, i.e. mixed patients are rarer than under a shuffle of the labels.
        mixed = sum(0 < sum(v) < len(v) for v in several)
        labels = [x for v in visits.values() for x in v]
        rng = np.random.default_rng(0)
        shuffled_mixed = []
        for _ in range(200):
            perm, k, count = rng.permutation(labels), 0, 0
            for v in visits.values():
                part = perm[k : k + len(v)]
                k += len(v)
                count += len(v) >= 2 and 0 < part.sum() < len(v)
            shuffled_mixed.append(count)
        assert mixed < np.mean(shuffled_mixed)


@pytest.mark.parametrize("level", ["realistic", "hard"])
def test_levels_same_seed_identical_bytes(tmp_path: Path, level: str) -> None:
    params = dict(n=8, positive_rate=0.5, seed=4, size=(48, 40), difficulty=level, label_noise=0.2, sites=2)
    first = _all_files(generate_dataset(tmp_path / "a", **params).root)
    assert first == _all_files(generate_dataset(tmp_path / "b", **params).root)
    assert first != _all_files(generate_dataset(tmp_path / "c", **{**params, "seed": 5}).root)


def test_different_difficulty_in_existing_output_is_refused(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "out", n=3, size=(32, 32), difficulty="hard").root
    with pytest.raises(ValidationError, match="different parameters.*difficulty.*choose an empty folder"):
        generate_dataset(out, n=3, size=(32, 32), difficulty="realistic")
    with pytest.raises(ValidationError, match="different parameters.*sites"):
        generate_dataset(out, n=3, size=(32, 32), difficulty="hard", sites=2)


def test_version_1_output_counts_as_easy(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "out", n=3, size=(32, 32), difficulty="easy").root
    params = json.loads((out / "synth.json").read_text())
    for key in ("difficulty", "label_noise", "sites", "reference_auroc"):
        params.pop(key)
    (out / "synth.json").write_text(json.dumps({**params, "version": 1}))
    with pytest.raises(ValidationError, match="difficulty='easy' there"):
        generate_dataset(out, n=3, size=(32, 32))
    assert generate_dataset(out, n=3, size=(32, 32), difficulty="easy").n == 3  # regenerated


def test_readme_reports_reference_auroc(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "out", n=20, positive_rate=0.3, size=(32, 32), difficulty="hard")
    text = (summary.root / "README.txt").read_text()
    assert "difficulty=hard" in text and f"{summary.reference_auroc:.3f}" in text
    assert "lookalike_strength" in text and "evidence" in text


def test_cli_difficulty_options(tmp_path: Path) -> None:
    res = run_cli("synth", str(tmp_path / "bad"), "--difficulty", "nope")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "difficulty" in res.stderr
    res = run_cli(
        "synth",
        str(tmp_path / "ok"),
        "--n",
        "12",
        "--size",
        "32x32",
        "--difficulty",
        "hard",
        "--label-noise",
        "0.25",
        "--sites",
        "2",
    )
    assert res.returncode == 0, res.stderr
    params = json.loads((tmp_path / "ok" / "synth.json").read_text())
    assert (params["difficulty"], params["label_noise"], params["sites"]) == ("hard", 0.25, 2)
