"""Pair sanity check: is each case's pre/post pair one cervix, photographed in the right order?

Why: a data pipeline swaps pre and post, or pairs one patient's pre with another patient's post, and a
model trained on such pairs learns noise. Nothing else checks it: the importer sees two valid images.
Each case gets a score, a reason and a status (``cases.pair_status``): NULL (not checked yet), ``ok``,
``suspect`` (kept out of training and queued as a ``pair-check`` item for an expert), and the expert's
``confirmed`` (a sound pair after all: back into training) or ``rejected``.

Per pair (both images decoded with :func:`workbench.data.images.load_rgb` at ``WORK_SIZE`` px; numpy,
scipy and PIL only):

1. **Structure thumbnails.** Each shot becomes a ``THUMB_SIZE`` x ``THUMB_SIZE`` band-pass image: the
   green channel (vessels contrast most there), in log (exposure becomes an offset), small bright
   specks (specular highlights, which differ between shots) replaced by the local median, difference of
   Gaussians (``BAND_SIGMAS`` px: vessels, os, texture stay; illumination, vignetting and dome shading
   go), clipped at 3 robust SDs. The data set's mean thumbnail (what every cervix shares: a dark os near
   the centre, the rim) is subtracted, so what is left is specific to this cervix.
2. **Similarity and registration.** Normalised cross-correlation of the central ``WINDOW_FRACTION`` of
   the pre thumbnail with the post thumbnail, maximised over shifts up to ``SHIFT_FRACTION`` of the side,
   rotations ``ANGLES`` and scales ``SCALES``: the misalignment real pairs have between shots. The best
   correlation is the pair's *structural similarity*; its warp registers post onto pre for step 3.
3. **Change.** Antisymmetric pre-to-post statistics (post minus pre: exchanging the shots flips their
   sign exactly): the shift of the tissue's colour (log blue/red and log green/red of the median tissue
   colour, median saturation; exposure cancels) and the whitening gained by the registered post over
   pre against the whitening gained the other way (means of the top 1/3/10% and log fractions above two
   levels, after a 3 and a 5 px max filter that absorbs what the registration leaves). Whiteness is the
   baseline's (``evaluation.baseline``: each shot relative to its own tissue median, so exposure, white
   balance and a uniform tint cancel); the tissue and glare masks are the baseline's too.

Across the data set (every threshold is relative to the data set itself, so the check transfers to data
from another camera or generator; the two constants below are likelihood-ratio and robust-z levels, not
image levels):

* **Not the same cervix** (``mismatched``). The *matched* distribution is every pair's similarity (Fisher
  z, median and MAD, robust to the few faulty pairs); the *null* distribution is the similarity of up to
  ``NULL_PAIRS`` pre/post combinations of *different* patients drawn from the same data set (what "not
  the same cervix" looks like here). A pair is flagged when the Gaussian log-likelihood ratio
  null : matched is at least ``FAULT_LLR`` AND the robust z of its similarity against the data set's
  pairs is at most ``MISMATCH_MAX_Z``.
* **Probably swapped** (``swapped``). Exchanging the shots negates the change vector, so the data set
  provides its own counter-examples: a logistic regression without intercept learns to tell each pair's
  change ``d`` from its mirror ``-d`` (features scaled by their robust spread), cross-fitted in ``FOLDS``
  folds so that no pair judges itself. Its log-odds ``t`` for a pair's own change ranks pairs from
  "typical" to "typical only when mirrored", but is shrunk (its training labels include the data set's
  own swapped pairs), so it is recalibrated in one dimension the same way as the similarity: sound pairs
  ``t ~ N(m, s)`` (median and MAD of ``t`` over the data set), swapped pairs the mirror ``N(-m, s)``,
  log-likelihood ratio swapped : sound ``= -2 t m / s^2``; a pair is flagged when it is at least
  ``FAULT_LLR``. Which way is "right" is learned from the data (new whitening in post, the stain's
  colour shift, whatever is consistent); a data set without a consistent pre-to-post change has
  ``m`` near 0 (ratios near 0) and gets no swap flags.

``FAULT_LLR = 1.5``: a fault must be at least e^1.5 (about 4.5) times as likely as a sound pair.
``MISMATCH_MAX_Z = -3``: and a mismatch must lie outside the bulk of this data set's own pairs. The score
stored per case is the log-likelihood ratio fault : sound of the fault named (``mismatched`` when both
pass), for a sound pair the larger of the two (negative: the pair looks sound). On the synthetic data
about 1-2% of sound pairs are flagged (docs/benchmarks.md).

Cases are checked in sets: the cases to check plus up to ``REFERENCE_SIZE`` already checked ``ok`` or
``confirmed`` cases as reference, at least ``MIN_PAIRS`` pairs of at least ``MIN_PATIENTS`` patients in
all (fewer: the cases stay unchecked, with a note, and are checked again at the next import or round).
Expert decisions (``confirmed``, ``rejected``) are never overwritten. Measured recall and precision on
planted faults: ``bench/bench_pair_check.py`` and docs/benchmarks.md.

Limits: a mismatched pair of two near-identical cervices (e.g. the same patient's other visit) or a
swap in a data set whose pairs have no consistent pre-to-post change is not detected; a sound pair whose
post differs a lot from its pre (a very large lesion, heavy glare, a rotation beyond about 8 degrees or a
rescaling beyond about 10%) can be flagged as not the same cervix. That is what the expert's
``confirmed`` is for.

Modules: ``features`` (one pair: thumbnails, registration, change), ``verdicts`` (a set of pairs:
data-relative verdicts, no database), ``store`` (which cases, writing statuses, queueing suspects) and
``queries`` (reading results back).
"""

from workbench.data.pair_check.features import (
    CHANGE_FEATURES,
    Registration,
    band_image,
    change_features,
    register,
)
from workbench.data.pair_check.queries import FlaggedPair, case_by_ref, flagged_pairs, pair_status_counts
from workbench.data.pair_check.store import (
    CHECK_STATUSES,
    EXCLUDED_FROM_TRAINING,
    REFERENCE_SIZE,
    PairCheckSummary,
    check_pairs,
    check_unchecked_safely,
)
from workbench.data.pair_check.verdicts import (
    FAULT_LLR,
    FAULTS,
    MIN_PAIRS,
    MIN_PATIENTS,
    MISMATCH_MAX_Z,
    PAIR_CHECK_VERSION,
    PairCheckResult,
    PairVerdict,
    check_pair_files,
)
from workbench.db.models import PAIR_CHECK_KIND

__all__ = [
    "CHANGE_FEATURES",
    "CHECK_STATUSES",
    "EXCLUDED_FROM_TRAINING",
    "FAULT_LLR",
    "FAULTS",
    "MIN_PAIRS",
    "MIN_PATIENTS",
    "MISMATCH_MAX_Z",
    "PAIR_CHECK_KIND",
    "PAIR_CHECK_VERSION",
    "REFERENCE_SIZE",
    "FlaggedPair",
    "PairCheckResult",
    "PairCheckSummary",
    "PairVerdict",
    "Registration",
    "band_image",
    "case_by_ref",
    "change_features",
    "check_pair_files",
    "check_pairs",
    "check_unchecked_safely",
    "flagged_pairs",
    "pair_status_counts",
    "register",
]
