"""Read models: what the pages (and other displays) show, one module per domain.

Every function takes an Engine, reads in one short session and returns plain dataclasses or dicts
(never ORM rows bound to a session), so no page holds SQL. Nothing here writes.

- :mod:`workbench.read.rounds`: active-learning rounds and the label history round by round.
- :mod:`workbench.read.case_context`: what the model says about one case while it is labelled.
- :mod:`workbench.read.versions`: model versions for the Models and Jobs pages, paired comparisons.
- :mod:`workbench.read.calibration`: calibrated versions, calibration readings, operating points.
- :mod:`workbench.read.pair_check`: the pair sanity check for the Data page.
"""
