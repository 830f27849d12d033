"""Each seed's split of a simulation: a never-queried test set (by patient, stratified), the pool, and the
stratified initial labelled set drawn from the pool; every strategy of a seed shares it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import ValidationError


@dataclass(frozen=True)
class SeedSplit:
    """Indices into the case list: the never-queried test set, the pool, and the initial labelled subset."""

    test: np.ndarray
    pool: np.ndarray
    initial: np.ndarray


def split_for_seed(
    labels: Sequence[int], patients: Sequence[str], seed: int, initial: int, test_fraction: float
) -> SeedSplit:
    """Test set by patient, stratified (assign_patient_splits); initial set stratified with >= 2 positives."""
    from workbench.data.splits import PatientCases, assign_patient_splits

    y = np.asarray(labels, dtype=int)
    by_patient: dict[str, PatientCases] = {}
    for label, pid in zip(y, patients, strict=True):
        by_patient.setdefault(pid, PatientCases(pid)).labels.append(int(label))
    proportions = {"train": 1.0 - test_fraction, "val": 0.0, "test": test_fraction}
    assigned = assign_patient_splits(list(by_patient.values()), {}, proportions, seed=seed)
    is_test = np.array([assigned[p] == "test" for p in patients])
    test, pool = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    rng = np.random.default_rng([seed, 0x1A1])
    pos, neg = pool[y[pool] == 1], pool[y[pool] == 0]
    if initial > len(pool):
        raise ValidationError(f"initial ({initial}) is larger than the pool ({len(pool)} cases)")
    n_pos = max(2, round(initial * len(pos) / max(len(pool), 1)))
    n_pos = min(n_pos, len(pos), initial - min(1, len(neg)))
    n_neg = min(initial - n_pos, len(neg))
    n_pos = initial - n_neg
    chosen = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
    return SeedSplit(test=test, pool=pool, initial=np.sort(chosen))


def deal_splits(
    y_all: np.ndarray,
    patients: Sequence[str],
    seeds: Sequence[int],
    *,
    initial: int,
    rounds: int,
    batch: int,
    test_fraction: float,
) -> dict[int, SeedSplit]:
    """The split of every seed, refused when a pool cannot feed ``initial + rounds x batch`` labels or a
    test or initial set has no positive case."""
    splits = {s: split_for_seed(y_all, patients, s, initial, test_fraction) for s in seeds}
    for s, sp in splits.items():
        need = initial + rounds * batch
        if need > len(sp.pool):
            raise ValidationError(
                f"initial + rounds x batch = {initial} + {rounds} x {batch} = {need} labels, but the pool of "
                f"seed {s} holds only {len(sp.pool)} cases ({len(sp.test)} of {len(y_all)} are held out for test)"
            )
        if int(y_all[sp.test].sum()) == 0:
            raise ValidationError(f"the test set of seed {s} has no positive case: use a larger data set")
        if int(y_all[sp.initial].sum()) == 0:
            raise ValidationError(f"the pool of seed {s} has no positive case to start from")
    return splits
