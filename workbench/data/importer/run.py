"""The import itself: read the source, check every row, compare with the database, write in one transaction.

Why apart: this is the only part that writes (cases, labels, the import batch, de-identified PNGs);
each step of :func:`_import` is a named function so the order of checks and writes reads top to bottom.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from workbench.actors import LOCAL_OPERATOR, Actor
from workbench.data.images import MAX_PIXELS
from workbench.data.importer.checks import Rejected, _check_row, _Checked, _label_name
from workbench.data.importer.consistency import _assign_splits, _chunks, _compare_stored, _repeated_case_ids
from workbench.data.importer.dicom_store import _DicomStore
from workbench.data.importer.report import ImportResult, _nest, _write_report
from workbench.data.sources import Source, read_source
from workbench.data.splits import DEFAULT_PROPORTIONS
from workbench.db.engine import session_scope
from workbench.db.models import Case, ImportBatch, Label


def import_source(
    engine: Engine,
    path: Path,
    *,
    requester: Actor = LOCAL_OPERATOR,
    proportions: dict[str, float] | None = None,
    seed: int = 0,
    strict: bool = False,
    dry_run: bool = False,
    report_dir: Path | None = None,
    max_pixels: int = MAX_PIXELS,
    workers: int = 4,
    home: Path | None = None,
) -> ImportResult:
    """Import a manifest CSV or case folder; see the module docstring for the guarantees.

    ``strict``: import nothing when any row is rejected. ``dry_run``: validate and report only.
    ``report_dir``: where the rejected-rows CSV goes (default: ``reports/`` in the home folder).
    ``home``: the workbench home: DICOM images are stored de-identified there, the pseudonym salt lives
    there (default: the configured ``WORKBENCH_HOME``).
    """
    store = _DicomStore(home, stage=not dry_run)
    try:
        return _import(
            engine,
            path,
            store,
            requester,
            proportions,
            seed,
            strict,
            dry_run,
            report_dir,
            max_pixels,
            workers,
        )
    finally:
        store.cleanup()  # staged PNGs of rows not written (rejected, dry run, strict)


def _import(
    engine: Engine,
    path: Path,
    store: _DicomStore,
    requester: Actor,
    proportions: dict[str, float] | None,
    seed: int,
    strict: bool,
    dry_run: bool,
    report_dir: Path | None,
    max_pixels: int,
    workers: int,
) -> ImportResult:
    """The body of :func:`import_source`, run while ``store`` holds staged DICOM images."""
    from workbench.users import authorize_actor

    authorize_actor(engine, requester, "import")
    source = read_source(path)
    result = ImportResult(source=str(source.path), format=source.format, dry_run=dry_run)
    checked_all = _check_rows(source, store, max_pixels, workers, result)

    with session_scope(engine) as session:
        good, unchanged = _sort_rows(session, checked_all, result)
        splits = _assign_splits(session, good, proportions or DEFAULT_PROPORTIONS, seed)
        _summarise(good, splits, result)

        write = not dry_run and not (strict and result.rejected)
        batch: ImportBatch | None = None
        if write and good:
            batch = _write_cases(session, source, requester, good, splits, store, result)
        if write:
            # An unchanged DICOM case whose stored PNG was deleted gets it back (same bytes, same name).
            store.commit([d for c in unchanged for d in c.derived.values()])
        if result.rejected:  # before the commit and before anyone is told the outcome
            result.rejected.sort(key=lambda r: r.line)
            result.report_path, result.report_error = _write_report(
                result.rejected, report_dir or store.home_dir() / "reports"
            )
            if batch is not None and result.report_path is not None:
                batch.report_path = str(result.report_path)
        if not write:
            session.rollback()

    if result.batch_id is not None:  # committed: the pair check can neither undo nor mask the import
        from workbench.data.pair_check import check_unchecked_safely

        result.pair_check = check_unchecked_safely(engine, "import")["message"]
    return result


def _check_rows(
    source: Source, store: _DicomStore, max_pixels: int, workers: int, result: ImportResult
) -> list[_Checked | Rejected]:
    """Every row checked in parallel; rows of a case id given conflicting labels are rejected unread."""
    conflicts, repeats = _repeated_case_ids(source)
    result.rejected.extend(repeats)
    rows = [r for r in source.rows if r.case_id.strip() not in conflicts]
    result.rejected.extend(
        Rejected(r.line, r.case_id, conflicts[r.case_id.strip()])
        for r in source.rows
        if r.case_id.strip() in conflicts
    )
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checked_all = list(
            pool.map(lambda r: _check_row(source.root, r, max_pixels, store, source.format), rows)
        )
    return checked_all


def _stored_cases(
    session: Session, checked_all: list[_Checked | Rejected]
) -> tuple[dict[str, Case], dict[str, Case]]:
    """Stored cases sharing a case id, and stored cases sharing a pair hash, with the checked rows."""
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
    return existing_by_id, existing_by_pair


def _sort_rows(
    session: Session, checked_all: list[_Checked | Rejected], result: ImportResult
) -> tuple[list[_Checked], list[_Checked]]:
    """(new cases to write, rows naming an unchanged stored case); every other row goes to rejected.

    A repeated case id, a case id stored with other content, split or label, and a pair of image bytes
    already stored or earlier in the file are refused with the reason.
    """
    existing_by_id, existing_by_pair = _stored_cases(session, checked_all)
    seen_ids: dict[str, int] = {}
    seen_pairs: dict[str, str] = {}
    good: list[_Checked] = []
    unchanged: list[_Checked] = []
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
                unchanged.append(item)
            continue
        twin = existing_by_pair.get(item.pair_sha256)
        if twin is not None:
            result.rejected.append(
                Rejected(item.row.line, cid, f"duplicate pair: same image bytes as case {twin.external_id}")
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
    return good, unchanged


def _summarise(good: list[_Checked], splits: dict[str, str], result: ImportResult) -> None:
    """The result's image conversions and counts per split and class of the new cases."""
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


def _write_cases(
    session: Session,
    source: Source,
    requester: Actor,
    good: list[_Checked],
    splits: dict[str, str],
    store: _DicomStore,
    result: ImportResult,
) -> ImportBatch:
    """Add the import batch, the new cases and their labels to the session (committed by the caller)."""
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
    # De-identified PNGs go into place before the commit, so no stored case lacks its images.
    store.commit([d for c in good for d in c.derived.values()])
    for c in good:
        case = Case(
            external_id=c.row.case_id.strip(),
            patient_id=c.patient_id,
            pre_path=c.stored_path("pre"),
            post_path=c.stored_path("post"),
            pre_sha256=c.stored_sha256("pre"),
            post_sha256=c.stored_sha256("post"),
            pair_sha256=c.pair_sha256,
            pre_width=c.pre.width,
            pre_height=c.pre.height,
            post_width=c.post.width,
            post_height=c.post.height,
            split=splits[c.row.case_id.strip()],
            import_batch_id=batch.id,
            source_metadata=c.source_metadata,
        )
        session.add(case)
        if c.label is not None:
            case.labels.append(Label(value=c.label, labeller=f"import:{batch.id}", source="import"))
    result.imported = len(good)
    return batch
