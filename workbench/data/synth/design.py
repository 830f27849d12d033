"""Study design of a synthetic data set: who is positive, which patient, which case is unlabelled, which
recorded labels are flipped and which pairs get a planted fault.

Why apart from the pixels: these draws use their own random streams, so the design can be read and tested
without rendering an image.
"""

from __future__ import annotations

import numpy as np

from workbench.errors import ValidationError


def _n_positives(n: int, rate: float) -> int:
    k = round(n * rate)
    if rate > 0:
        k = max(k, 1)
    return min(k, n)


def _design(
    n: int, rate: float, unlabelled_fraction: float, cases_per_patient: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return labels (0/1), patient index (0-based, ordered by first case) and an unlabelled mask."""
    k = _n_positives(n, rate)
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.choice(n, size=k, replace=False)] = 1
    patients = _assign_patients(n, cases_per_patient, rng)
    return labels, patients, _choose_unlabelled(labels, unlabelled_fraction, rng)


def _design_clustered(
    n: int,
    rate: float,
    unlabelled_fraction: float,
    cases_per_patient: float,
    risk_sigma: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like ``_design``, but the positives are drawn with probability proportional to a log-normal
    patient-level risk, so a patient's visits tend to share their label."""
    patients = _assign_patients(n, cases_per_patient, rng)
    risk = np.exp(rng.normal(0.0, risk_sigma, size=int(patients.max()) + 1))
    weight = risk[patients]
    k = _n_positives(n, rate)
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.choice(n, size=k, replace=False, p=weight / weight.sum())] = 1
    return labels, patients, _choose_unlabelled(labels, unlabelled_fraction, rng)


def _assign_patients(n: int, cases_per_patient: float, rng: np.random.Generator) -> np.ndarray:
    n_patients = min(n, max(1, round(n / cases_per_patient)))
    owner = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, size=n - n_patients)])
    rng.shuffle(owner)
    # Renumber patients by first appearance so ids increase along the case list.
    _, first = np.unique(owner, return_index=True)
    rank = np.empty(n_patients, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(n_patients)
    return rank[owner]


def _choose_unlabelled(
    labels: np.ndarray, unlabelled_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    n = len(labels)
    unlabelled = np.zeros(n, dtype=bool)
    n_unl = round(n * unlabelled_fraction)
    pos_idx, neg_idx = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    # Stratified: each class gives up its share, but keeps at least one labelled case when it has any.
    cap_pos, cap_neg = max(len(pos_idx) - 1, 0), max(len(neg_idx) - 1, 0)
    u_pos = min(round(n_unl * len(pos_idx) / n), cap_pos)
    u_neg = min(n_unl - u_pos, cap_neg)
    u_pos = min(n_unl - u_neg, cap_pos)
    if u_pos:
        unlabelled[rng.choice(pos_idx, size=u_pos, replace=False)] = True
    if u_neg:
        unlabelled[rng.choice(neg_idx, size=u_neg, replace=False)] = True
    return unlabelled


def _flip_labels(
    labels: np.ndarray, unlabelled: np.ndarray, label_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Recorded labels: exactly ``round(label_noise * labelled)`` labelled cases flipped."""
    recorded = labels.copy()
    labelled = np.flatnonzero(~unlabelled)
    m = round(label_noise * len(labelled))
    if m:
        flip = rng.choice(labelled, size=m, replace=False)
        recorded[flip] = 1 - recorded[flip]
    return recorded


def _plant_faults(
    k_swap: int, k_mismatch: int, patients: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], dict[int, int]]:
    """Which cases are swapped / mismatched (exact counts) and each mismatched case's donor case.

    Donors are unfaulted cases of another patient, distinct while there are enough of them.
    """
    n = len(patients)
    faults = [""] * n
    order = rng.permutation(n)
    for i in order[:k_swap]:
        faults[int(i)] = "swapped"
    for i in order[k_swap : k_swap + k_mismatch]:
        faults[int(i)] = "mismatched"
    clean = np.sort(order[k_swap + k_mismatch :])
    donors: dict[int, int] = {}
    used: set[int] = set()
    for i in sorted(int(i) for i in order[k_swap : k_swap + k_mismatch]):
        donor = None
        for _ in range(64):  # a random draw almost always fits; the scan below covers the rare rest
            j = int(clean[rng.integers(len(clean))])
            if patients[j] != patients[i] and j not in used:
                donor = j
                break
        if donor is None:
            others = clean[patients[clean] != patients[i]]
            if not len(others):
                raise ValidationError(
                    "mismatch_rate needs unfaulted cases of at least one other patient to take a post "
                    "image from; lower the rates or generate more cases"
                )
            fresh = others[~np.isin(others, sorted(used))]
            donor = int(rng.choice(fresh if len(fresh) else others))
        used.add(donor)
        donors[i] = donor
    return faults, donors
