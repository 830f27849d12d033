"""Tests for the synthetic pre/post pair generator (real files in tmp_path, small sizes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.data.synth import SynthSummary, generate_dataset, parse_size
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
    assert header == ["case_id", "label", "patient_id"]
    assert dataset.n == len(truth) == 30
    assert dataset.positives == sum(int(r["label"]) for r in truth) == 6
    assert dataset.patients == len({r["patient_id"] for r in truth})
    assert (dataset.root / "README.txt").read_text().count("does not model") == 1
    params = json.loads((dataset.root / "synth.json").read_text())
    assert params["n"] == 30 and params["seed"] == 3 and params["size"] == [64, 64]


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
    summary = generate_dataset(tmp_path / "out", n=40, positive_rate=0.5, seed=0, size=(64, 64))
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
