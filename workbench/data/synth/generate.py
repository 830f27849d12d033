"""``generate_dataset``: the one entry point that writes a synthetic data set (see the package docstring).

It validates the options, reuses a complete earlier output of the same parameters or clears a stale one,
draws the design, renders every case and writes the manifest, ground truth, README and ``synth.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from workbench.data.synth.anatomy import _make_patient
from workbench.data.synth.design import _design, _design_clustered, _flip_labels, _plant_faults
from workbench.data.synth.easy import _render_case
from workbench.data.synth.files import (
    _TMP_SUFFIX,
    CASES_DIR,
    GROUND_TRUTH_NAME,
    MANIFEST_NAME,
    PAIR_FAULT_COLUMN,
    PARAMS_NAME,
    README_NAME,
    TRUTH_COLUMNS,
    _apply_faults,
    _case_ids,
    _complete,
    _csv_bytes,
    _encode,
    _foreign_entries,
    _patient_ids,
    _summary_from_files,
    _write_atomic,
)
from workbench.data.synth.levels import _LEVELS, _STANDARD_SITE, _apply_site, _make_site
from workbench.data.synth.options import (
    GENERATOR_VERSION,
    SynthSummary,
    _validate,
    _validate_faults,
    _validate_levels,
)
from workbench.data.synth.readme import _README, _README_FAULTS, _fmt, _model_text, _na
from workbench.data.synth.realistic import _render_case2
from workbench.errors import ValidationError

#: Parameters a version-1 synth.json lacks, with the values version 1 implied.
_V1_DEFAULTS = {"difficulty": "easy", "label_noise": 0.0, "sites": 1}
#: Parameters written to synth.json only when non-zero; an output without them had them at zero.
_FAULT_DEFAULTS = {"swap_rate": 0.0, "mismatch_rate": 0.0}


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if len(set(labels.tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(labels, scores)), 4)


def generate_dataset(
    out: Path,
    n: int = 400,
    positive_rate: float = 0.1,
    seed: int = 0,
    size: tuple[int, int] = (128, 128),
    unlabelled_fraction: float = 0.0,
    cases_per_patient: float = 1.3,
    image_format: str = "jpg",
    difficulty: str = "realistic",
    label_noise: float = 0.0,
    sites: int = 1,
    swap_rate: float = 0.0,
    mismatch_rate: float = 0.0,
) -> SynthSummary:
    """Write a synthetic pair data set to ``out`` (see the module docstring) and return its summary.

    ``size`` is ``(width, height)``. Exactly ``round(n * positive_rate)`` positives (at least one when the
    rate is above zero). ``difficulty`` is ``"easy"`` (generator version 1 pixels), ``"realistic"`` or
    ``"hard"``; ``label_noise`` flips exactly ``round(label_noise * labelled)`` recorded labels in the
    manifest; ``sites`` (1-16) draws that many site/device profiles; ``swap_rate`` / ``mismatch_rate``
    plant exactly ``round(n * rate)`` swapped / mismatched pairs (column ``pair_fault``). Reuses a complete
    earlier output of the same parameters instead of regenerating; refuses a non-empty folder that is not
    such an output.
    """
    n, positive_rate, seed, size, unlabelled_fraction, cases_per_patient, fmt = _validate(
        n, positive_rate, seed, size, unlabelled_fraction, cases_per_patient, image_format
    )
    difficulty, label_noise, sites = _validate_levels(difficulty, label_noise, sites)
    swap_rate, mismatch_rate, k_swap, k_mismatch = _validate_faults(swap_rate, mismatch_rate, n)
    faulty = bool(k_swap or k_mismatch or swap_rate or mismatch_rate)
    root = Path(out)
    params = {
        "generator": "workbench.data.synth",
        "version": GENERATOR_VERSION,
        "n": n,
        "positive_rate": positive_rate,
        "seed": seed,
        "size": list(size),
        "unlabelled_fraction": unlabelled_fraction,
        "cases_per_patient": cases_per_patient,
        "image_format": fmt,
        "difficulty": difficulty,
        "label_noise": label_noise,
        "sites": sites,
    }
    if faulty:  # only then, so a fault-free synth.json stays byte-identical to earlier outputs
        params.update(swap_rate=swap_rate, mismatch_rate=mismatch_rate)
    compared = {**_FAULT_DEFAULTS, **params}
    if root.exists() and not root.is_dir():
        raise ValidationError(f"output path {root} exists and is not a folder; choose an empty folder")
    if root.is_dir() and any(root.iterdir()):
        params_file = root / PARAMS_NAME
        if params_file.is_file():
            try:
                previous = json.loads(params_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                previous = None
            if isinstance(previous, dict):
                # Version 1 outputs predate the difficulty levels: they are what "easy" draws today.
                previous = {**_V1_DEFAULTS, **_FAULT_DEFAULTS, **previous}
            same = (
                isinstance(previous, dict)
                and previous.get("generator") == params["generator"]
                and {k: previous.get(k) for k in compared if k != "version"}
                == {k: v for k, v in compared.items() if k != "version"}
            )
            if not same:
                raise ValidationError(
                    f"{root} already holds synthetic data made with different parameters "
                    f"({_describe_difference(previous, compared)}); choose an empty folder"
                )
            if previous.get("version") == GENERATOR_VERSION and _complete(root, n, fmt):
                summary = _summary_from_files(root, n, previous)
                if summary is not None:
                    return summary
        foreign = _foreign_entries(root)
        if foreign:
            shown = ", ".join(str(p.relative_to(root)) for p in foreign[:3])
            more = " and more" if len(foreign) > 3 else ""
            raise ValidationError(
                f"{root} is not empty and does not look like a synthetic data folder "
                f"(found {shown}{more}); choose an empty folder"
            )
        # Only our own (stale or interrupted) files: clear them and regenerate.
        (root / PARAMS_NAME).unlink(missing_ok=True)
        shutil.rmtree(root / CASES_DIR, ignore_errors=True)
        for name in (MANIFEST_NAME, GROUND_TRUTH_NAME, README_NAME):
            (root / name).unlink(missing_ok=True)
        for leftover in root.glob("*" + _TMP_SUFFIX):
            leftover.unlink()
    root.mkdir(parents=True, exist_ok=True)

    seq = np.random.SeedSequence([seed, 0x5E7A])
    # The first three streams are those of generator version 1 (easy keeps its pixels); the others are new.
    # Spawning a sixth child leaves the first five as they were (children are numbered in order).
    design_seq, patient_seq, case_seq, noise_seq, site_seq, fault_seq = seq.spawn(6)
    level = _LEVELS.get(difficulty)
    design_rng = np.random.default_rng(design_seq)
    if level is None:
        labels, patients, unlabelled = _design(
            n, positive_rate, unlabelled_fraction, cases_per_patient, design_rng
        )
    else:
        labels, patients, unlabelled = _design_clustered(
            n, positive_rate, unlabelled_fraction, cases_per_patient, level.risk_sigma, design_rng
        )
    recorded = _flip_labels(labels, unlabelled, label_noise, np.random.default_rng(noise_seq))
    n_patients = int(patients.max()) + 1
    patient_models = [_make_patient(np.random.default_rng(s)) for s in patient_seq.spawn(n_patients)]
    case_ids, patient_ids = _case_ids(n), _patient_ids(n_patients)
    site_rng = np.random.default_rng(site_seq)
    if sites == 1:
        site_models = [_STANDARD_SITE]
        patient_site = np.zeros(n_patients, dtype=np.int64)
    else:
        site_models = [_make_site(site_rng) for _ in range(sites)]
        patient_site = np.arange(n_patients) % sites
        site_rng.shuffle(patient_site)

    faults, donors = [""] * n, {}
    if faulty:
        faults, donors = _plant_faults(k_swap, k_mismatch, patients, np.random.default_rng(fault_seq))

    width, height = size
    manifest_rows, truth_rows, evidence, case_dirs = [], [], [], []
    for i, (case_id, case_rng_seq) in enumerate(zip(case_ids, case_seq.spawn(n), strict=True)):
        rng = np.random.default_rng(case_rng_seq)
        patient = patient_models[patients[i]]
        site_index = int(patient_site[patients[i]])
        site = site_models[site_index]
        if level is None:
            pre, post, info = _render_case(width, height, patient, bool(labels[i]), rng)
            pre, post = _apply_site(pre, site, rng), _apply_site(post, site, rng)
        else:
            pre, post, info = _render_case2(width, height, patient, bool(labels[i]), level, site, rng)
        case_dir = root / CASES_DIR / case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        case_dirs.append(case_dir)
        _write_atomic(case_dir / f"pre.{fmt}", _encode(pre, fmt, site.quality))
        _write_atomic(case_dir / f"post.{fmt}", _encode(post, fmt, site.quality))
        label = "" if unlabelled[i] else str(int(recorded[i]))
        pid = patient_ids[patients[i]]
        rel = f"{CASES_DIR}/{case_id}"
        manifest_rows.append([case_id, f"{rel}/pre.{fmt}", f"{rel}/post.{fmt}", label, pid])
        evidence.append(round(info["evidence"], 4))
        truth_rows.append(
            [
                case_id,
                str(int(labels[i])),
                label,
                pid,
                f"site-{site_index + 1}",
                _fmt(info["lesion_strength"]),
                _fmt(info["lesion_area"]),
                _fmt(info["lookalike_strength"]),
                _fmt(info["evidence"]),
            ]
            + ([faults[i]] if faulty else [])
        )
    if faulty:
        _apply_faults(case_dirs, fmt, faults, donors)

    _write_atomic(
        root / MANIFEST_NAME,
        _csv_bytes(["case_id", "pre_path", "post_path", "label", "patient_id"], manifest_rows),
    )
    truth_header = list(TRUTH_COLUMNS) + ([PAIR_FAULT_COLUMN] if faulty else [])
    _write_atomic(root / GROUND_TRUTH_NAME, _csv_bytes(truth_header, truth_rows))
    scores = np.array(evidence)
    keep = ~unlabelled
    reference = {
        "truth": _auroc(scores, labels),
        "recorded": _auroc(scores[keep], recorded[keep]),
    }
    positives, labelled = int(labels.sum()), int(keep.sum())
    flipped = int((recorded[keep] != labels[keep]).sum())
    readme = _README.format(
        version=GENERATOR_VERSION,
        n=n,
        rate=positive_rate,
        seed=seed,
        w=width,
        h=height,
        unl=unlabelled_fraction,
        cpp=cases_per_patient,
        fmt=fmt,
        difficulty=difficulty,
        noise=label_noise,
        sites=sites,
        pos=positives,
        labelled=labelled,
        flipped=flipped,
        patients=n_patients,
        reference=(
            f"  against the true labels: {_na(reference['truth'])}; "
            f"against the recorded labels: {_na(reference['recorded'])}"
        ),
        model=_model_text(difficulty),
    )
    swapped, mismatched = faults.count("swapped"), faults.count("mismatched")
    if faulty:
        readme += _README_FAULTS.format(
            swap_rate=swap_rate,
            mismatch_rate=mismatch_rate,
            swapped=swapped,
            mismatched=mismatched,
            fmt=fmt,
        )
    _write_atomic(root / README_NAME, readme.encode("utf-8"))
    record = {**params, "reference_auroc": reference}
    _write_atomic(root / PARAMS_NAME, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return SynthSummary(
        root=root,
        manifest=root / MANIFEST_NAME,
        ground_truth=root / GROUND_TRUTH_NAME,
        n=n,
        positives=positives,
        labelled=labelled,
        patients=n_patients,
        difficulty=difficulty,
        label_noise=label_noise,
        sites=sites,
        reference_auroc=reference["truth"],
        reference_auroc_recorded=reference["recorded"],
        swapped=swapped,
        mismatched=mismatched,
    )


def _describe_difference(previous: object, params: dict) -> str:
    if not isinstance(previous, dict):
        return f"unreadable {PARAMS_NAME}"
    diffs = [
        f"{key}={previous.get(key)!r} there, {value!r} asked"
        for key, value in params.items()
        if key != "version" and previous.get(key) != value
    ]
    return "; ".join(diffs[:4]) or "different generator"
