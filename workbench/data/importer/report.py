"""What an import tells its caller: the :class:`ImportResult` and the CSV report of rejected rows.

Why apart: the report is written before the commit and may fail on its own (read-only folder, disk
full); that failure is recorded in the result, never raised, so it cannot hide an import that happened.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from workbench.data.importer.checks import Rejected
from workbench.files import atomic_replace


@dataclass
class ImportResult:
    """What an import did: counts per split and class, rejected rows and where the report went."""

    source: str
    format: str
    imported: int = 0
    unchanged: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    batch_id: int | None = None
    report_path: Path | None = None
    dry_run: bool = False
    pair_check: str | None = None  # one line from workbench.data.pair_check, after a written import
    report_error: str | None = None  # why the rejected-rows report could not be written (rows unaffected)

    def report_note(self) -> str | None:
        """One line on the rejected-rows report: where it is, or why it is missing and what was kept."""
        if self.report_path is not None:
            return f"report of rejected rows: {self.report_path}"
        if self.report_error is None:
            return None
        kept = (
            f"the {self.imported} imported case(s) are committed (batch {self.batch_id}), but "
            if self.batch_id is not None
            else ""
        )
        return f"{kept}the report of rejected rows could not be written ({self.report_error})"


def _nest(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (split, label), n in sorted(counts.items()):
        out.setdefault(split, {})[label] = n
    return out


def _write_report(rejected: list[Rejected], folder: Path) -> tuple[Path | None, str | None]:
    """Write rejected rows to a CSV (line, case_id, reason): (its path, None) or (None, why not).

    Never raises for an OS error: the caller's import must not fail because its report could not be
    written. The file is written under a temporary name and renamed, so no half report is left.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"import-report-{stamp}.csv"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_replace(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["line", "case_id", "reason"])
            for r in rejected:
                writer.writerow([r.line, r.case_id, r.reason])
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return None, f"cannot write in {folder}: {exc.strerror or exc}"
    return path, None
