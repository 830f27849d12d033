"""Validated import of case pairs: every row is checked fully before anything is written.

Good rows are imported in one transaction; bad rows are reported one per line with a specific
reason (and written to a CSV report). Re-running the same import adds and changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from workbench.data.images import MAX_PIXELS, ImageInfo, inspect_image, resolve_inside
from workbench.data.labels import current_labels, latest_label_subquery
from workbench.data.sources import RawRow, read_source
from workbench.data.splits import (
    DEFAULT_PROPORTIONS,
    PatientCases,
    assign_patient_splits,
    parse_split,
    split_for_case,
)
from workbench.db.engine import session_scope
from workbench.db.models import Case, ImportBatch, Label
from workbench.errors import ValidationError

LABEL_VALUES = {"0": 0, "1": 1, "negative": 0, "positive": 1, "neg": 0, "pos": 1}
MAX_ID_LENGTH = 256


def parse_label(text: str) -> int | None:
    """0/1 from ``0``, ``1``, ``negative``, ``positive`` (any case); None when empty."""
    value = text.strip().lower()
    if not value:
        return None
    if value not in LABEL_VALUES:
        raise ValidationError(f"bad label {text!r} (use 0, 1, negative, positive, or leave empty)")
    return LABEL_VALUES[value]


@dataclass
class Rejected:
    """A row that was not imported and why."""

    line: int
    case_id: str
    reason: str


@dataclass
class _Checked:
    row: RawRow
    label: int | None
    split: str | None
    patient_id: str
    pre: ImageInfo
    post: ImageInfo

    @property
    def pair_sha256(self) -> str:
        return hashlib.sha256(f"{self.pre.sha256}:{self.post.sha256}".encode()).hexdigest()


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


def _check_row(root: Path, row: RawRow, max_pixels: int) -> _Checked | Rejected:
    """Validate one row completely (ids, label, split, both images decoded); never raises."""
    try:
        if row.problem:
            raise ValidationError(row.problem)
        case_id = row.case_id.strip()
        if not case_id:
            raise ValidationError("empty case id")
        if len(case_id) > MAX_ID_LENGTH:
            raise ValidationError(f"case id longer than {MAX_ID_LENGTH} characters")
        label = parse_label(row.label)
        split = parse_split(row.split)
        if split == "pool" and label is not None:
            raise ValidationError("split 'pool' is for unlabelled cases, but a label is given")
        patient_id = row.patient_id.strip() or case_id
        if len(patient_id) > MAX_ID_LENGTH:
            raise ValidationError(f"patient id longer than {MAX_ID_LENGTH} characters")
        infos = []
        for which, rel in (("pre", row.pre), ("post", row.post)):
            try:
                infos.append(inspect_image(resolve_inside(root, rel), max_pixels=max_pixels))
            except ValidationError as exc:
                raise ValidationError(f"{which} image: {exc}") from None
        if infos[0].sha256 == infos[1].sha256:
            raise ValidationError("pre and post images are the same file content")
        return _Checked(row, label, split, patient_id, infos[0], infos[1])
    except ValidationError as exc:
        return Rejected(row.line, row.case_id, str(exc))
    except Exception as exc:  # an unexpected failure on one row must not stop the import
        return Rejected(row.line, row.case_id, f"unexpected error: {type(exc).__name__}: {exc}")


def _stored_path(info: ImageInfo) -> str:
    return str(info.path)


def import_source(
    engine: Engine,
    path: Path,
    *,
    requester: str = "cli",
    proportions: dict[str, float] | None = None,
    seed: int = 0,
    strict: bool = False,
    dry_run: bool = False,
    report_dir: Path | None = None,
    max_pixels: int = MAX_PIXELS,
    workers: int = 4,
) -> ImportResult:
    """Import a manifest CSV or case folder; see the module docstring for the guarantees.

    ``strict``: import nothing when any row is rejected. ``dry_run``: validate and report only.
    """
    from workbench.users import authorize_actor

    authorize_actor(engine, requester, "import")
    source = read_source(path)
    result = ImportResult(source=str(source.path), format=source.format, dry_run=dry_run)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checked_all = list(pool.map(lambda r: _check_row(source.root, r, max_pixels), source.rows))

    with session_scope(engine) as session:
        existing_by_id = {}
        existing_by_pair = {}
        ids = [c.row.case_id.strip() for c in checked_all if isinstance(c, _Checked)]
        pairs = [c.pair_sha256 for c in checked_all if isinstance(c, _Checked)]
        for chunk in _chunks(ids, 500):
            for case in session.scalars(select(Case).where(Case.external_id.in_(chunk))):
                existing_by_id[case.external_id] = case
        for chunk in _chunks(pairs, 500):
            for case in session.scalars(select(Case).where(Case.pair_sha256.in_(chunk))):
                existing_by_pair[case.pair_sha256] = case

        seen_ids: dict[str, int] = {}
        seen_pairs: dict[str, str] = {}
        good: list[_Checked] = []
        for item in checked_all:
            if isinstance(item, Rejected):
                result.rejected.append(item)
                continue
            cid = item.row.case_id.strip()
            if cid in seen_ids:
                result.rejected.append(
                    Rejected(item.row.line, cid, f"duplicate case id (first on line {seen_ids[cid]})")
                )
                continue
            seen_ids[cid] = item.row.line
            stored = existing_by_id.get(cid)
            if stored is not None:
                reason = _compare_stored(session, stored, item)
                if reason:
                    result.rejected.append(Rejected(item.row.line, cid, reason))
                else:
                    result.unchanged += 1
                continue
            twin = existing_by_pair.get(item.pair_sha256)
            if twin is not None:
                result.rejected.append(
                    Rejected(
                        item.row.line, cid, f"duplicate pair: same image bytes as case {twin.external_id}"
                    )
                )
                continue
            if item.pair_sha256 in seen_pairs:
                result.rejected.append(
                    Rejected(
                        item.row.line,
                        cid,
                        f"duplicate pair: same image bytes as case {seen_pairs[item.pair_sha256]} in this file",
                    )
                )
                continue
            seen_pairs[item.pair_sha256] = cid
            good.append(item)

        splits = _assign_splits(session, good, proportions or DEFAULT_PROPORTIONS, seed)
        result.converted = [
            f"{c.row.case_id}: {w} {info.converted}"
            for c in good
            for w, info in (("pre", c.pre), ("post", c.post))
            if info.converted
        ]
        counts: Counter[tuple[str, str]] = Counter()
        for c in good:
            counts[(splits[c.row.case_id.strip()], _label_name(c.label))] += 1
        result.split_counts = _nest(counts)

        write = not dry_run and not (strict and result.rejected)
        if write and good:
            batch = ImportBatch(
                source=str(source.path),
                format=source.format,
                requester=requester,
                imported=len(good),
                rejected=len(result.rejected),
            )
            session.add(batch)
            session.flush()
            result.batch_id = batch.id
            for c in good:
                case = Case(
                    external_id=c.row.case_id.strip(),
                    patient_id=c.patient_id,
                    pre_path=_stored_path(c.pre),
                    post_path=_stored_path(c.post),
                    pre_sha256=c.pre.sha256,
                    post_sha256=c.post.sha256,
                    pair_sha256=c.pair_sha256,
                    pre_width=c.pre.width,
                    pre_height=c.pre.height,
                    post_width=c.post.width,
                    post_height=c.post.height,
                    split=splits[c.row.case_id.strip()],
                    import_batch_id=batch.id,
                )
                session.add(case)
                if c.label is not None:
                    case.labels.append(Label(value=c.label, labeller=f"import:{batch.id}", source="import"))
            result.imported = len(good)
        if not write:
            session.rollback()

    if result.rejected:
        result.report_path = _write_report(result, report_dir)
    return result


def _compare_stored(session, stored: Case, item: _Checked) -> str | None:  # type: ignore[no-untyped-def]
    """Why a row naming an already imported case is refused (None: it is the same case, unchanged)."""
    if stored.pair_sha256 != item.pair_sha256:
        return "case id already imported with different image content"
    if item.split and item.split != stored.split:
        return f"case already imported in split {stored.split!r}; splits never change after import"
    if item.label is not None:
        current = current_labels(session, [stored.id]).get(stored.id)
        if current != item.label:
            return (
                f"case already imported with label {_label_name(current)}; an import never changes labels "
                "(relabel it in the labelling queue)"
            )
    return None


def _assign_splits(session, good: list[_Checked], proportions, seed: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Split of each new case: given split, else its patient's stored split, else a new patient split."""
    patient_ids = sorted({c.patient_id for c in good})
    stored: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(patient_ids, 500):
        for pid, split in session.execute(
            select(Case.patient_id, Case.split).where(Case.patient_id.in_(chunk)).distinct()
        ):
            stored[pid].add(split)
    new_patients: dict[str, PatientCases] = {}
    for c in good:
        if c.split is None and c.patient_id not in stored:
            new_patients.setdefault(c.patient_id, PatientCases(c.patient_id)).labels.append(c.label)
    cur = latest_label_subquery()
    existing_counts = {
        (split, value): n
        for split, value, n in session.execute(
            select(Case.split, cur.c.value, func.count())
            .join(cur, cur.c.case_id == Case.id)
            .where(cur.c.value.is_not(None))
            .group_by(Case.split, cur.c.value)
        )
    }
    patient_split = assign_patient_splits(list(new_patients.values()), existing_counts, proportions, seed)
    for pid, splits in stored.items():
        evaluation = splits & {"val", "test"}
        patient_split[pid] = sorted(evaluation)[0] if evaluation else "train"
    # A patient given an explicit split on one row keeps its other new rows with it.
    for c in good:
        if c.split is not None and c.patient_id not in stored:
            patient_split.setdefault(c.patient_id, c.split)
    out = {}
    for c in good:
        cid = c.row.case_id.strip()
        out[cid] = c.split if c.split is not None else split_for_case(patient_split[c.patient_id], c.label)
    return out


def _label_name(value: int | None) -> str:
    return {0: "negative", 1: "positive", None: "unlabelled"}[value]


def _nest(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (split, label), n in sorted(counts.items()):
        out.setdefault(split, {})[label] = n
    return out


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _write_report(result: ImportResult, report_dir: Path | None) -> Path:
    """Write rejected rows to a CSV (line, case_id, reason) and return its path."""
    folder = report_dir or Path(result.source).parent
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"import-report-{stamp}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["line", "case_id", "reason"])
            for r in result.rejected:
                writer.writerow([r.line, r.case_id, r.reason])
    except OSError as exc:
        raise ValidationError(f"cannot write the import report in {folder}: {exc.strerror}") from None
    return path
