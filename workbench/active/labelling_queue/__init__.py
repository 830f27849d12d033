"""The labelling queue: experts claim items under a time-limited lease, label them, skip or undo.

Each function is one transaction (``session_scope``). Claiming is ONE conditional
``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING id``: on PostgreSQL the inner SELECT takes
``FOR UPDATE SKIP LOCKED`` so concurrent experts never block on or double-lease a row; on SQLite the
engine starts every transaction with ``BEGIN IMMEDIATE``, which serialises writers. A lease that
runs out returns its item to the queue (lazily in :func:`claim_next`, or by :func:`release_expired`);
a late submit on it is refused with a message that says so.

Rules, all enforced here rather than in the UI:

* a labeller who holds an unexpired lease gets that same item back (a page reload is harmless),
  and the lease is renewed;
* an item never goes to the labeller named in ``exclude_labeller`` (who skipped it or said
  "Unsure"), nor to one who already labelled that case for the same kind of item, nor - for
  ``second_read`` and ``adjudication`` items - to anyone who already gave the case an expert label;
* "Unsure" records a label row with value NULL, closes the item and queues a new one for the same
  case that excludes this labeller; :func:`skip` (no label row) puts the SAME row back to
  ``queued`` with ``exclude_labeller`` set and the lease cleared;
* undo never deletes: it appends a ``correction`` label (value NULL) that withdraws the labeller's
  latest label and re-opens the case, leased to them at top priority;
* ``pair-check`` items (pairs the pair sanity check flagged) ask whether the pair is sound, not for a
  label: they are claimed only when asked for by kind, refused by :func:`submit_label`, and answered
  with :func:`answer_pair_check` (or, outside the queue, :func:`resolve_pair`), which sets the case's
  ``pair_status`` to ``confirmed`` (back into training) or ``rejected``.

Modules: ``rules`` (statuses, kinds, argument checks, locks), ``enqueue`` (batches onto the queue),
``claims`` (leases, skip, expired leases), ``answers`` (labels and undo), ``progress`` (counts) and
``pair_checks`` (answers to pair-check items).
"""

from workbench.active.labelling_queue.answers import LabelResult, submit_label, undo_last
from workbench.active.labelling_queue.claims import ClaimedItem, claim_next, release_expired, skip
from workbench.active.labelling_queue.enqueue import enqueue, enqueue_in
from workbench.active.labelling_queue.pair_checks import (
    PAIR_DECISIONS,
    PairAnswer,
    answer_pair_check,
    resolve_pair,
)
from workbench.active.labelling_queue.progress import queue_progress
from workbench.active.labelling_queue.rules import (
    INDEPENDENT_KINDS,
    LABEL_KINDS,
    LABELLABLE_SPLITS,
    OPEN_STATUSES,
    ensure_queueable,
)
from workbench.defaults import DEFAULT_LEASE_SECONDS

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "INDEPENDENT_KINDS",
    "LABELLABLE_SPLITS",
    "LABEL_KINDS",
    "OPEN_STATUSES",
    "PAIR_DECISIONS",
    "ClaimedItem",
    "LabelResult",
    "PairAnswer",
    "answer_pair_check",
    "claim_next",
    "enqueue",
    "enqueue_in",
    "ensure_queueable",
    "queue_progress",
    "release_expired",
    "resolve_pair",
    "skip",
    "submit_label",
    "undo_last",
]
