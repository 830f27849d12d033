"""Acquisition strategies: small pure numpy functions that score unlabelled cases by informativeness.

Every strategy has one contract, ``Strategy = Callable[[Candidates, np.random.Generator], Scored]``:
it gets the candidate pool (calibrated probabilities, the operating threshold and whatever
uncertainty estimates exist) and returns one score per case (higher = more worth labelling) with a
human-readable reason, so that each queued item can say why it was chosen.

:func:`select_batch` composes them into a mixed batch: quotas by stated proportions, filled strategy
by strategy, never the same case twice, near-duplicates thinned by k-center greedy on embeddings.

Batch-aware variants: a score-based strategy can be *sampled* instead of taken top-k
(``power:bald``, ``softmax@20:near_threshold``; :func:`sampled`), after Kirsch et al. 2022,
"Stochastic Batch Acquisition: A Simple Baseline for Deep Active Learning": a top-k of one round's
scores piles up redundant cases that a draw proportional to the scores spreads out. And
``class_balanced`` splits its share between likely positives and hidden ones among the predicted
negatives, so rare positives are looked for on both sides of the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from workbench.errors import ValidationError

_EPS = 1e-12
# Centres of the k-center ordering computed by the stand-alone ``diversity`` strategy; the other
# cases are scored by their distance to those centres (enough to rank any batch of that size).
DIVERSITY_MAX_CENTRES = 256
# With embeddings, each strategy shortlists its top SHORTLIST_FACTOR x quota cases, and k-center
# greedy keeps ``quota`` of them that are far from each other and from what is already picked.
SHORTLIST_FACTOR = 3
#: Strategies that exploit the ranking rather than explore it: the likely-positive slice is there to find
#: the rare positives, and spreading its quota over the top 3x quota by k-center picked cases the ranker
#: held less likely. They drop near-duplicates first, then k-center keeps the quota among the top
#: ``EXPLOIT_SHORTLIST_FACTOR`` x quota. Measured on the baseline-guided batch (bench_guided.py, 10
#: seeds): positives per query 2.19x -> 2.25x the pool's rate on hard data, 2.51x -> 2.72x on realistic.
EXPLOITING = frozenset({"likely_positive"})
EXPLOIT_SHORTLIST_FACTOR = 1.5
#: A case closer than this fraction of the shortlist's median pairwise distance to a better-ranked case
#: (or to one the batch already holds) is a near-duplicate of it.
DUPLICATE_FRACTION = 0.01


@dataclass(frozen=True)
class Candidates:
    """The pool to choose from, aligned arrays of length N (validated on construction).

    ``prob`` are calibrated probabilities; ``threshold`` is the operating threshold chosen by policy
    (not 0.5); ``uncertainty`` an MC-dropout standard deviation; ``mutual_information`` the BALD
    mutual information (bits) of the same stored MC passes; ``mc_probs`` K x N MC-dropout samples (for
    BALD in experiments that keep them); ``tta_spread`` the spread over test-time augmentations;
    ``embeddings`` N x D features. A case without MC passes carries a negative value (ranked last).
    """

    case_ids: np.ndarray
    prob: np.ndarray
    threshold: float
    uncertainty: np.ndarray | None = None
    mutual_information: np.ndarray | None = None
    mc_probs: np.ndarray | None = None
    tta_spread: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.case_ids)
        if ids.ndim != 1:
            raise ValidationError(f"case_ids must be one-dimensional, got shape {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValidationError(f"case_ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if np.unique(ids).size != ids.size:
            raise ValidationError("case_ids contain duplicates: each case may appear once in the pool")
        n = ids.size
        prob = _vector("prob", self.prob, n)
        if prob.size and (prob.min() < 0 or prob.max() > 1):
            raise ValidationError("prob must be probabilities in [0, 1]")
        thr = float(self.threshold)
        if not 0.0 <= thr <= 1.0:
            raise ValidationError(f"threshold must be in [0, 1], got {self.threshold}")
        object.__setattr__(self, "case_ids", ids)
        object.__setattr__(self, "prob", prob)
        object.__setattr__(self, "threshold", thr)
        for name in ("uncertainty", "mutual_information", "tta_spread"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _vector(name, value, n))
        if self.mc_probs is not None:
            mc = np.asarray(self.mc_probs, dtype=np.float64)
            if mc.ndim != 2 or mc.shape[1] != n or mc.shape[0] < 2:
                raise ValidationError(f"mc_probs must be K x N with K >= 2 and N = {n}, got shape {mc.shape}")
            if not np.isfinite(mc).all() or mc.min() < 0 or mc.max() > 1:
                raise ValidationError("mc_probs must be finite probabilities in [0, 1]")
            object.__setattr__(self, "mc_probs", mc)
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings, dtype=np.float64)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValidationError(f"embeddings must be N x D with N = {n}, got shape {emb.shape}")
            if not np.isfinite(emb).all():
                raise ValidationError("embeddings contain NaN or infinite values")
            object.__setattr__(self, "embeddings", emb)

    def __len__(self) -> int:
        return int(self.case_ids.size)


@dataclass(frozen=True)
class Scored:
    """One score per candidate (higher = more informative) and one reason string per candidate.

    ``order``, when given, are the keys a batch ranks by instead of the scores (a stochastic draw,
    an interleaving of two rankings); the scores are still what each pick reports.
    """

    scores: np.ndarray
    reason: list[str]
    order: np.ndarray | None = None

    @property
    def rank_keys(self) -> np.ndarray:
        """What the batch ranks by: ``order`` when given, else the scores."""
        return self.scores if self.order is None else self.order


@dataclass(frozen=True)
class Selected:
    """One case of a batch: which strategy chose it, its score under that strategy, and why."""

    case_id: int
    strategy: str
    score: float
    reason: str


Strategy = Callable[[Candidates, np.random.Generator], Scored]


def _vector(name: str, value: object, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,):
        raise ValidationError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValidationError(f"{name} contains NaN or infinite values")
    return arr


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli(p), elementwise (0 at p in {0, 1}, 1 at p = 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def near_threshold(c: Candidates, rng: np.random.Generator) -> Scored:
    """Closest to the OPERATING threshold first: score = -|p - threshold|."""
    dist = np.abs(c.prob - c.threshold)
    reasons = [
        f"p={p:.2f} near threshold {c.threshold:.2f} (|p-t|={d:.3f})"
        for p, d in zip(c.prob, dist, strict=True)
    ]
    return Scored(-dist, reasons)


def entropy(c: Candidates, rng: np.random.Generator) -> Scored:
    """Highest predictive entropy first (maximal at p = 0.5, whatever the threshold)."""
    h = binary_entropy(c.prob)
    return Scored(h, [f"entropy {v:.3f} bits at p={p:.2f}" for v, p in zip(h, c.prob, strict=True)])


def bald_scores(mc_probs: np.ndarray) -> np.ndarray:
    """BALD mutual information (bits) from K x N MC samples: H(mean_k p_k) - mean_k H(p_k)."""
    mc = np.asarray(mc_probs, dtype=np.float64)
    return binary_entropy(mc.mean(axis=0)) - binary_entropy(mc).mean(axis=0)


def bald(c: Candidates, rng: np.random.Generator) -> Scored:
    """Most disagreement between MC-dropout samples first: from the samples when given, else the
    mutual information stored with the predictions, else (older predictions) the MC std; the reason
    says which estimate ranked the case."""
    if c.mc_probs is not None:
        mi = bald_scores(c.mc_probs)
        k = c.mc_probs.shape[0]
        return Scored(mi, [f"BALD mutual information {v:.3f} bits over {k} MC samples" for v in mi])
    if c.mutual_information is not None and (c.mutual_information >= 0).any():
        mi = c.mutual_information
        return Scored(
            mi.copy(),
            [
                f"BALD mutual information {v:.3f} bits (stored MC-dropout passes)"
                if v >= 0
                else "BALD: no MC-dropout passes on this case"
                for v in mi
            ],
        )
    if c.uncertainty is not None:
        u = c.uncertainty
        return Scored(u.copy(), [f"BALD fallback: MC-dropout std {v:.3f} (no MC samples stored)" for v in u])
    raise ValidationError("strategy 'bald' needs MC-dropout samples (mc_probs) or an uncertainty estimate")


def tta_spread(c: Candidates, rng: np.random.Generator) -> Scored:
    """Largest spread of predictions over test-time augmentations first."""
    if c.tta_spread is None:
        raise ValidationError(
            "strategy 'tta_spread' needs TTA spreads (run inference with test-time augmentation)"
        )
    s = c.tta_spread
    return Scored(
        s.copy(),
        [
            f"TTA spread {v:.3f} over 4 pair-consistent views (flips) at p={p:.2f}"
            if v >= 0
            else "TTA spread not measured (outside the shortlist)"
            for v, p in zip(s, c.prob, strict=True)
        ],
    )


def likely_positive(c: Candidates, rng: np.random.Generator) -> Scored:
    """Highest probability first: finds the rare positives that the training set lacks."""
    return Scored(c.prob.copy(), [f"p={p:.2f}: likely positive" for p in c.prob])


def random(c: Candidates, rng: np.random.Generator) -> Scored:
    """Uniform random order: the honest audit sample, unbiased by the model."""
    return Scored(rng.random(len(c)), ["random audit sample"] * len(c))


def k_center_greedy(
    embeddings: np.ndarray,
    k: int,
    already_selected_idx: Sequence[int] | np.ndarray = (),
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Greedy k-center: repeatedly pick the point farthest (Euclidean) from everything picked so far.

    Returns up to ``k`` new indices (never one of ``already_selected_idx``), in pick order. With
    nothing already selected, the first point is drawn with ``rng``. Exact duplicates of picked
    points have distance 0, so they come last: this is what removes near-duplicates from a batch.
    """
    return _k_center(embeddings, k, already_selected_idx, rng)[0]


def _k_center(
    embeddings: np.ndarray,
    k: int,
    already_selected_idx: Sequence[int] | np.ndarray,
    rng: np.random.Generator | None,
) -> tuple[list[int], list[float]]:
    """k-center greedy picks and, for each pick, its distance to the nearest earlier pick (inf if none)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValidationError(f"embeddings must be N x D, got shape {emb.shape}")
    if k < 0:
        raise ValidationError(f"k must be >= 0, got {k}")
    n = emb.shape[0]
    chosen = np.zeros(n, dtype=bool)
    already = [int(i) for i in already_selected_idx]
    if any(i < 0 or i >= n for i in already):
        raise ValidationError(f"already_selected_idx out of range for {n} points")
    chosen[already] = True
    k = min(k, n - int(chosen.sum()))
    if k <= 0:
        return [], []
    sq = np.einsum("ij,ij->i", emb, emb)
    min_d2 = np.full(n, np.inf)

    def absorb(i: int) -> None:
        d2 = np.maximum(sq - 2.0 * (emb @ emb[i]) + sq[i], 0.0)
        np.minimum(min_d2, d2, out=min_d2)

    for i in already:
        absorb(i)
    picks: list[int] = []
    dists: list[float] = []
    if not already:
        rng = rng if rng is not None else np.random.default_rng()
        first = int(rng.integers(n))
        picks.append(first)
        dists.append(math.inf)
        chosen[first] = True
        absorb(first)
    while len(picks) < k:
        nxt = int(np.argmax(np.where(chosen, -1.0, min_d2)))
        picks.append(nxt)
        dists.append(math.sqrt(min_d2[nxt]))
        chosen[nxt] = True
        absorb(nxt)
    return picks, dists


def diversity(c: Candidates, rng: np.random.Generator) -> Scored:
    """Cover the embedding space: k-center greedy order (score = distance to earlier picks).

    The first ``DIVERSITY_MAX_CENTRES`` centres get their pick distance; every other case gets its
    distance to the nearest centre, which is never more than the last centre's, so the top-m cases
    by score are the greedy m-center solution for any m up to that cap.
    """
    if c.embeddings is None:
        raise ValidationError("strategy 'diversity' needs embeddings")
    n = len(c)
    if n == 0:
        return Scored(np.zeros(0), [])
    emb = c.embeddings
    order, dists = _k_center(emb, min(n, DIVERSITY_MAX_CENTRES), (), rng)
    centres = emb[order]
    d2 = (
        np.einsum("ij,ij->i", emb, emb)[:, None]
        - 2.0 * emb @ centres.T
        + np.einsum("ij,ij->i", centres, centres)[None, :]
    )
    scores = np.sqrt(np.maximum(d2, 0.0).min(axis=1))
    scores[order[1:]] = dists[1:]
    scores[order[0]] = (max(dists[1:]) if n > 1 else 0.0) + 1.0  # the seed comes first
    reasons = [f"k-center: distance {s:.3f} to the nearest more central case" for s in scores]
    reasons[order[0]] = "k-center seed (first centre)"
    return Scored(scores, reasons)


def class_balanced(c: Candidates, rng: np.random.Generator) -> Scored:
    """Rare positives from both sides of the threshold: two rankings, interleaved.

    Half "likely positive": P(positive)-weighted uncertainty, p x H(p) (uncertain cases that lean
    positive). Half "hidden positive": the most uncertain (H(p)) of the cases predicted negative
    (p < threshold), where a model short of positives hides the ones it misses. The batch ranks by
    the alternation A1, B1, A2, B2, ... (a case already placed is skipped; when the predicted
    negatives run out, A continues), so a quota of q holds ceil(q/2) of A and floor(q/2) of B
    whenever the pool has them. H is the predictive entropy of the calibrated probability: it
    exists for every case without MC passes. The reason names the half.
    """
    n = len(c)
    h = binary_entropy(c.prob)
    weighted = c.prob * h
    order_a = np.argsort(-weighted, kind="stable")
    negatives = np.flatnonzero(c.prob < c.threshold)
    order_b = negatives[np.argsort(-h[negatives], kind="stable")]
    position = np.full(n, -1, dtype=np.int64)
    scores = np.zeros(n)
    reasons = [""] * n
    a = b = placed = 0
    turn_a = True
    while placed < n:
        if turn_a or b >= order_b.size:
            while position[order_a[a]] >= 0:
                a += 1
            i = int(order_a[a])
            scores[i] = weighted[i]
            reasons[i] = (
                f"class-balanced, likely-positive half: p x H(p) = {weighted[i]:.3f} at p={c.prob[i]:.2f}"
            )
        else:
            while b < order_b.size and position[order_b[b]] >= 0:
                b += 1
            if b >= order_b.size:
                turn_a = True
                continue
            i = int(order_b[b])
            scores[i] = h[i]
            reasons[i] = (
                f"class-balanced, hidden-positive half: entropy {h[i]:.3f} bits among predicted "
                f"negatives (p={c.prob[i]:.2f} < threshold {c.threshold:.2f})"
            )
        position[i] = placed
        placed += 1
        turn_a = not turn_a
    return Scored(scores, reasons, order=-position.astype(np.float64))


STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        "near_threshold": near_threshold,
        "entropy": entropy,
        "bald": bald,
        "tta_spread": tta_spread,
        "likely_positive": likely_positive,
        "random": random,
        "diversity": diversity,
        "class_balanced": class_balanced,
    }
)

#: Stochastic batch acquisition (Kirsch et al. 2022), written ``MODE[@BETA]:STRATEGY`` in a mix:
#: ``power`` draws case i with probability proportional to score_i ** beta, ``softmax`` to
#: exp(beta x score_i), ``softrank`` to rank_i ** -beta (rank 1 = best score; scale-free). A batch
#: of q is drawn without replacement by the Gumbel-top-k trick: the q largest keys
#: ``log-weight_i + Gumbel noise``. beta defaults to 1 (the paper's default); beta -> infinity is
#: the deterministic top-k, beta = 0 uniform sampling. Softmax depends on the scores' scale: on
#: scores in [0, 1] (probabilities, entropies) beta = 1 is close to uniform, so give it a larger beta.
SAMPLING_MODES = ("power", "softmax", "softrank")
DEFAULT_BETA = 1.0
#: The strategies that rank by a score and may be sampled (random, diversity and class_balanced
#: choose by construction, not by a score).
SAMPLEABLE = ("near_threshold", "entropy", "bald", "tta_spread", "likely_positive")
#: Strategies whose score is a negated distance (<= 0): power sampling weights them by
#: distance ** -beta (closer is likelier), as score ** beta needs scores >= 0.
NEGATED_DISTANCE = frozenset({"near_threshold"})
MAX_NAME = 32  # queue_items.strategy holds this many characters
_TINY = 1e-300  # the weight of a zero (or unmeasured, negative) score under power sampling


@dataclass(frozen=True)
class Sampling:
    """A parsed ``MODE[@BETA]:STRATEGY`` name."""

    mode: str
    beta: float
    base: str


def parse_sampling(name: str) -> Sampling | None:
    """The sampling a strategy name asks for; None for a plain name. Raises ValidationError for a
    malformed one (unknown mode or strategy, a strategy that cannot be sampled, a bad beta)."""
    if ":" not in name:
        return None
    if len(name) > MAX_NAME:
        raise ValidationError(
            f"strategy {name!r} is longer than {MAX_NAME} characters (what a queue item stores)"
        )
    head, _, base = name.partition(":")
    mode, at, beta_text = head.partition("@")
    form = f"write MODE[@BETA]:STRATEGY with MODE one of {', '.join(SAMPLING_MODES)}"
    if mode not in SAMPLING_MODES:
        raise ValidationError(f"strategy {name!r}: unknown sampling mode {mode!r} ({form})")
    if base not in SAMPLEABLE:
        raise ValidationError(
            f"strategy {name!r}: {base!r} cannot be sampled (one of {', '.join(SAMPLEABLE)}; {form})"
        )
    beta = DEFAULT_BETA
    if at:
        try:
            beta = float(beta_text)
        except ValueError:
            raise ValidationError(f"strategy {name!r}: beta {beta_text!r} is not a number ({form})") from None
        if not math.isfinite(beta) or beta < 0:
            raise ValidationError(f"strategy {name!r}: beta must be a finite number >= 0, got {beta_text!r}")
    return Sampling(mode, beta, base)


def base_strategy(name: str) -> str:
    """The strategy a (possibly sampled) name ranks by: ``power:bald`` -> ``bald``."""
    sampling = parse_sampling(name)
    return name if sampling is None else sampling.base


def sampling_keys(
    scores: np.ndarray, mode: str, beta: float, rng: np.random.Generator, negated_distance: bool = False
) -> np.ndarray:
    """Gumbel-top-k keys: the top q of them are a draw of q cases without replacement with
    probability proportional to the mode's weight (see :data:`SAMPLING_MODES`)."""
    s = np.asarray(scores, dtype=np.float64)
    if mode == "power" and negated_distance:
        log_weight = -np.log(np.maximum(-s, 0.0) + _EPS)
    elif mode == "power":
        log_weight = np.log(np.maximum(s, _TINY))
    elif mode == "softmax":
        log_weight = s
    elif mode == "softrank":
        rank = np.empty(s.size)
        rank[np.argsort(-s, kind="stable")] = np.arange(1, s.size + 1)
        log_weight = -np.log(rank)
    else:
        raise ValidationError(f"unknown sampling mode {mode!r} (one of {', '.join(SAMPLING_MODES)})")
    return beta * log_weight + rng.gumbel(size=s.size)


def sampled(sampling: Sampling) -> Strategy:
    """The base strategy's scores, drawn instead of taken top-k (reproducible from the batch's
    generator); each reason says it was sampled, how, and with what beta."""
    base = STRATEGIES[sampling.base]

    def strategy(c: Candidates, rng: np.random.Generator) -> Scored:
        scored = base(c, rng)
        keys = sampling_keys(
            scored.scores, sampling.mode, sampling.beta, rng, sampling.base in NEGATED_DISTANCE
        )
        note = f"sampled by {sampling.mode} (beta={sampling.beta:g}) from: "
        return Scored(scored.scores, [note + why for why in scored.reason], order=keys)

    return strategy


def strategy_for(name: str) -> Strategy:
    """The strategy a mix name stands for: one of :data:`STRATEGIES` or a sampled ``MODE[@BETA]:NAME``."""
    sampling = parse_sampling(name)
    if sampling is not None:
        return sampled(sampling)
    if name not in STRATEGIES:
        raise ValidationError(
            f"unknown strategy {name!r} (one of {', '.join(STRATEGIES)}, or sampled as "
            f"MODE[@BETA]:NAME with MODE one of {', '.join(SAMPLING_MODES)}, e.g. power:near_threshold)"
        )
    return STRATEGIES[name]


#: Why these shares (``bench/bench_guided.py``, 10 seeds, 160 queries after 40 labels): near-threshold
#: picks under the default screening policy are 2-5% positive (the threshold sits deep in the negatives),
#: so half the batch there (the mix before 2026-12-01: 0.5 / 0.35 / 0.15) found 2.25x / 2.72x / 3.10x the
#: pool's rate on hard / realistic / easy data; 0.35 / 0.5 / 0.15 finds 2.45x / 2.83x / 3.47x, and its
#: labels train an equal or better baseline with fewer labels. The near-threshold slice stays the
#: largest non-exploiting one: it holds the hard negatives the operating threshold must separate.
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {"near_threshold": 0.35, "likely_positive": 0.5, "random": 0.15}
)


def validate_mix(mix: Mapping[str, float]) -> dict[str, float]:
    """Check a strategy mix: known (or sampled) names, finite non-negative proportions that sum to 1."""
    if not mix:
        raise ValidationError("the strategy mix is empty: give at least one strategy and its proportion")
    out: dict[str, float] = {}
    for name, share in mix.items():
        strategy_for(name)  # raises for an unknown or malformed name
        try:
            value = float(share)
        except (TypeError, ValueError):
            raise ValidationError(f"proportion of {name!r} is not a number: {share!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValidationError(f"proportion of {name!r} must be a finite number >= 0, got {share!r}")
        out[name] = value
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ValidationError(f"strategy proportions must sum to 1, got {total:g} ({out})")
    return out


def quotas(mix: Mapping[str, float], batch_size: int) -> dict[str, int]:
    """Split ``batch_size`` by proportions with largest-remainder rounding (ties: mix order)."""
    shares = validate_mix(mix)
    raw = {name: share * batch_size for name, share in shares.items()}
    out = {name: int(math.floor(v + 1e-9)) for name, v in raw.items()}
    left = batch_size - sum(out.values())
    names = list(shares)
    by_remainder = sorted(names, key=lambda nm: (-(raw[nm] - out[nm]), names.index(nm)))
    for name in by_remainder[:left]:
        out[name] += 1
    return out


def _ranked(scores: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Indices of available candidates, best score first (ties by pool order)."""
    idx = np.flatnonzero(available)
    return idx[np.argsort(-scores[idx], kind="stable")]


def select_batch(
    candidates: Candidates,
    batch_size: int,
    mix: Mapping[str, float] = DEFAULT_MIX,
    rng: np.random.Generator | int | None = None,
) -> list[Selected]:
    """A mixed batch: each strategy fills its quota from cases no earlier strategy took.

    ``random`` is filled first, so the audit slice is a uniform sample of the WHOLE pool (not of
    what the other strategies left); the others follow in mix order. With embeddings, each strategy
    shortlists its top ``SHORTLIST_FACTOR`` x quota cases and k-center greedy keeps the quota that is
    farthest from each other and from the cases already in the batch (near-duplicates removed); an
    exploiting strategy (:data:`EXPLOITING`) drops near-duplicates first and keeps a narrower shortlist;
    ``diversity`` itself runs k-center over all remaining cases. A sampled name (``power:bald``)
    ranks by its Gumbel keys, drawn from ``rng``, so the same seed gives the same batch. A batch at
    least as large as the pool returns the whole pool. Raises ValidationError for a bad mix, batch
    size, or a strategy whose inputs (MC samples, TTA spreads, embeddings) are missing.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    shares = validate_mix(mix)
    if "diversity" in shares and shares["diversity"] > 0 and candidates.embeddings is None:
        raise ValidationError("strategy 'diversity' needs embeddings")
    n = len(candidates)
    size = min(int(batch_size), n)
    if size == 0:
        return []
    quota = quotas(shares, size)
    order = [name for name in shares if name == "random"] + [name for name in shares if name != "random"]
    emb = candidates.embeddings
    available = np.ones(n, dtype=bool)
    picked: list[int] = []
    out: list[Selected] = []
    for name in order:
        q = min(quota[name], int(available.sum()))
        if q <= 0:
            continue
        if name == "diversity":
            assert emb is not None
            chosen, scores, notes = _diverse_picks(emb, available, picked, q, rng)
        else:
            scored = strategy_for(name)(candidates, rng)
            ranked = _ranked(scored.rank_keys, available)
            if emb is not None and name != "random":
                shortlist = ranked[: SHORTLIST_FACTOR * q]
                if name in EXPLOITING:
                    shortlist = _duplicates_last(emb, shortlist, picked)[
                        : max(q, int(EXPLOIT_SHORTLIST_FACTOR * q))
                    ]
                if picked:
                    sub = np.concatenate([emb[picked], emb[shortlist]])
                    keep = [j - len(picked) for j in k_center_greedy(sub, q, range(len(picked)), rng)]
                else:  # seed with the best-scored case, then spread out from it
                    keep = [0, *k_center_greedy(emb[shortlist], q - 1, [0], rng)]
                chosen = [int(shortlist[j]) for j in keep]
                note = f"; kept by k-center among the top {len(shortlist)} for diversity"
            else:
                chosen = [int(i) for i in ranked[:q]]
                note = ""
            scores = [float(scored.scores[i]) for i in chosen]
            notes = [scored.reason[i] + note for i in chosen]
        for i, score, why in zip(chosen, scores, notes, strict=True):
            available[i] = False
            picked.append(i)
            out.append(Selected(int(candidates.case_ids[i]), name, score, why))
    return out


def _duplicates_last(emb: np.ndarray, ranked: np.ndarray, picked: list[int]) -> np.ndarray:
    """``ranked`` (best first) with every near-duplicate (``DUPLICATE_FRACTION``) of a better-ranked case
    or of a case already ``picked`` moved to the end, in rank order: used only when nothing else is left."""
    from scipy.spatial.distance import cdist, pdist

    points = emb[ranked]
    dist = cdist(points, points)
    scale = float(np.median(pdist(points))) if len(ranked) > 1 else 0.0
    to_picked = cdist(points, emb[picked]).min(axis=1) if picked else np.full(len(ranked), np.inf)
    kept: list[int] = []
    later: list[int] = []
    for j in range(len(ranked)):
        nearest = min([to_picked[j], *(dist[j, k] for k in kept)])
        (kept if nearest > DUPLICATE_FRACTION * scale else later).append(j)
    return ranked[kept + later]


def _diverse_picks(
    emb: np.ndarray, available: np.ndarray, picked: list[int], q: int, rng: np.random.Generator
) -> tuple[list[int], list[float], list[str]]:
    """k-center over every available case, away from the cases the batch already holds."""
    pool = np.flatnonzero(available)
    sub = np.concatenate([emb[picked], emb[pool]]) if picked else emb[pool]
    new, dists = _k_center(sub, q, range(len(picked)), rng)
    chosen = [int(pool[j - len(picked)]) for j in new]
    scores = [d if math.isfinite(d) else 0.0 for d in dists]
    notes = [
        f"k-center: {d:.3f} from the nearest case already in the batch"
        if math.isfinite(d)
        else "k-center seed (first centre)"
        for d in dists
    ]
    return chosen, scores, notes
