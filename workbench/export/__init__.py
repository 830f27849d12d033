"""Export: promote the current best version, write a checksummed bundle with its model card, and
predict from a bundle without the database.

Heavy imports (Keras, TensorFlow) happen inside the functions, so importing this package is cheap.
"""

from workbench.export.bundle import BundleInfo, export_bundle, export_job
from workbench.export.card import render_card
from workbench.export.facts import collect_facts
from workbench.export.predict import Bundle, load_bundle, verify_bundle
from workbench.export.promotion import best_by_rule, current_best, promote, promotion_history, resolve_version

__all__ = [
    "Bundle",
    "BundleInfo",
    "best_by_rule",
    "collect_facts",
    "current_best",
    "export_bundle",
    "export_job",
    "load_bundle",
    "promote",
    "promotion_history",
    "render_card",
    "resolve_version",
    "verify_bundle",
]
