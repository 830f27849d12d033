"""Validated import of case pairs: every row is checked fully before anything is written.

Good rows are imported in one transaction; bad rows are reported one per line with a specific
reason (and written to a CSV report). Re-running the same import adds and changes nothing.

The report of rejected rows goes to ``report_dir``, by default ``$WORKBENCH_HOME/reports`` (never next
to the source, which may be a read-only mount). It is written before the import commits and before
the result is returned; when it cannot be written (read-only folder, disk full) the import still
commits its good rows and the result says so separately (:attr:`ImportResult.report_error`), so a
report failure never hides an import that happened.

A case id given more than once (two manifest rows, or two ``labels.csv`` lines of a folder source)
with different labels imports neither label: every row naming it is rejected, saying which lines
disagree. Repeats that agree on the label import the case once and report each repeat as a duplicate.

DICOM images (rules in :mod:`workbench.data.dicom`): each is decoded, converted to a de-identified PNG
staged under ``$WORKBENCH_HOME/images/dicom/`` and moved into place only when its case is written
(just before the commit; a failed commit can leave unreferenced, content-addressed PNGs that a retry
reuses). The case row points to the PNG; the patient id is the manifest's or the pseudonymised
PatientID; StudyDate, SeriesInstanceUID and AcquisitionDateTime go to ``cases.source_metadata``. A row
whose case id contains the DICOM's PatientID or PatientName is refused, and every reason and case id
reported for a DICOM row has those values redacted.

Modules: ``checks`` (one row, files only), ``dicom_store`` (staging de-identified PNGs, the pseudonymised
patient id), ``consistency`` (repeated case ids, stored cases, split assignment), ``report`` (the result
and the CSV of rejected rows) and ``run`` (:func:`import_source`, the only part that writes).
"""

from workbench.data.importer.checks import (
    LABEL_VALUES,
    MAX_ID_LENGTH,
    WITHHELD_CASE_ID,
    Rejected,
    parse_label,
)
from workbench.data.importer.report import ImportResult
from workbench.data.importer.run import import_source

__all__ = [
    "LABEL_VALUES",
    "MAX_ID_LENGTH",
    "WITHHELD_CASE_ID",
    "ImportResult",
    "Rejected",
    "import_source",
    "parse_label",
]
