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
"""

from __future__ import annotations

import csv
import hashlib
import os
import secrets
import shutil
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from workbench.actors import LOCAL_OPERATOR, Actor
from workbench.data import dicom
from workbench.data.images import MAX_PIXELS, ImageInfo, decode_image, inspect_image, resolve_inside
from workbench.data.labels import current_labels, latest_label_subquery
from workbench.data.sources import RawRow, Source, _open_csv, read_source
from workbench.data.splits import (
    DEFAULT_PROPORTIONS,
    PatientCases,
    assign_patient_splits,
    parse_split,
    split_for_case,
)
from workbench.db.engine import session_scope
from workbench.db.models import Case, ImportBatch, Label
from workbench.errors import SettingsError, ValidationError
from workbench.files import atomic_replace

LABEL_VALUES = {"0": 0, "1": 1, "negative": 0, "positive": 1, "neg": 0, "pos": 1}
MAX_ID_LENGTH = 256
WITHHELD_CASE_ID = "(withheld)"


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


@dataclass(frozen=True)
class _Derived:
    """The de-identified PNG made from a DICOM image: where it goes, its sha256, where it is staged."""

    final: Path
    sha256: str
    staged: Path | None


@dataclass
class _Checked:
    row: RawRow
    label: int | None
    split: str | None
    patient_id: str
    pre: ImageInfo
    post: ImageInfo
    derived: dict[str, _Derived] = field(default_factory=dict)  # "pre"/"post" when that image is DICOM
    source_metadata: dict[str, object] | None = None

    def stored_path(self, which: str) -> str:
        """Path the case row records: the de-identified PNG for a DICOM image, else the file itself."""
        derived = self.derived.get(which)
        return str(derived.final) if derived else _stored_path(getattr(self, which))

    def stored_sha256(self, which: str) -> str:
        derived = self.derived.get(which)
        return derived.sha256 if derived else getattr(self, which).sha256

    @property
    def pair_sha256(self) -> str:
        pre, post = self.stored_sha256("pre"), self.stored_sha256("post")
        return hashlib.sha256(f"{pre}:{post}".encode()).hexdigest()


class _DicomStore:
    """Set up on the first DICOM row: the pseudonym salt, and staging of the de-identified PNGs.

    ``stage=False`` (dry run) computes the PNGs' hashes and writes nothing. It also knows the workbench
    home (the default report folder is under it), read from the settings only when first needed.
    """

    def __init__(self, home: Path | None, stage: bool) -> None:
        self._home = home
        self._stage = stage
        self._lock = threading.Lock()
        self._salt: bytes | None = None
        self._staging: Path | None = None

    def home_dir(self) -> Path:
        """The workbench home (read from the settings on first use only)."""
        if self._home is None:
            from workbench.config import get_settings

            self._home = get_settings().home
        return self._home

    def salt(self) -> bytes:
        with self._lock:
            if self._salt is None:
                from workbench.config import get_settings

                configured = get_settings().id_salt
                self._salt = (
                    bytes.fromhex(configured.get_secret_value().strip())
                    if configured is not None
                    else dicom.load_salt(self.home_dir())
                )
            return self._salt

    def put(self, png: bytes) -> _Derived:
        """Stage one PNG (fsynced, so a later rename never exposes a partial file)."""
        digest = hashlib.sha256(png).hexdigest()
        with self._lock:
            store = dicom.store_dir(self.home_dir())
            if self._stage and self._staging is None:
                self._staging = store / f".incoming-{secrets.token_hex(8)}"
                try:
                    self._staging.mkdir(parents=True)
                except OSError as exc:
                    raise SettingsError(f"cannot create {self._staging}: {exc.strerror or exc}") from None
            staging = self._staging
        final = store / f"{digest}.png"
        if staging is None:
            return _Derived(final, digest, None)
        staged = staging / f"{secrets.token_hex(8)}.png"
        try:
            with open(staged, "wb") as fh:
                fh.write(png)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SettingsError(
                f"cannot write a de-identified image in {staging}: {exc.strerror or exc}"
            ) from None
        return _Derived(final, digest, staged)

    def commit(self, derived: list[_Derived]) -> None:
        """Move staged PNGs into place (an existing file of the same name already has these bytes)."""
        for item in derived:
            if item.staged is None or item.final.exists():
                continue
            try:
                os.replace(item.staged, item.final)
            except OSError as exc:
                raise SettingsError(
                    f"cannot store a de-identified image at {item.final}: {exc.strerror or exc}"
                ) from None

    def cleanup(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


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


def _check_row(
    root: Path, row: RawRow, max_pixels: int, store: _DicomStore, fmt: str = "manifest"
) -> _Checked | Rejected:
    """Validate one row completely (ids, label, split, both images decoded).

    Never raises for a bad row; only a SettingsError (salt or image store unusable) stops the import.
    """
    identifiers: set[str] = set()
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
        paths: dict[str, Path] = {}
        headers: dict[str, dicom.DicomHeader] = {}
        for which, rel in (("pre", row.pre), ("post", row.post)):
            try:
                paths[which] = resolve_inside(root, rel)
                if dicom.is_dicom(paths[which]):
                    headers[which] = dicom.read_header(paths[which])
                    identifiers |= headers[which].identifiers
            except ValidationError as exc:
                raise ValidationError(f"{which} image: {exc}") from None
        metadata: dict[str, object] | None = None
        if headers:
            order = "pre_path/post_path columns" if fmt == "manifest" else "pre.*/post.* file names"
            if row.order_by_time:
                first, second, order = dicom.order_by_time(headers["pre"], headers["post"])
                headers = {"pre": first, "post": second}
                paths = {"pre": first.path, "post": second.path}
            patient_id, how = _dicom_patient_id(row, case_id, headers, store)
            metadata = {"patient_id": how, "pre_post_order": order}
            metadata.update({which: dict(h.metadata) for which, h in headers.items()})
        infos: dict[str, ImageInfo] = {}
        derived: dict[str, _Derived] = {}
        for which, path in paths.items():
            try:
                if which in headers:
                    info, rgb = decode_image(path, max_pixels=max_pixels)
                    derived[which] = store.put(dicom.png_bytes(rgb))
                    del rgb
                    info = replace(info, converted=f"{info.converted}; stored as a de-identified PNG")
                else:
                    info = inspect_image(path, max_pixels=max_pixels)
            except ValidationError as exc:
                raise ValidationError(f"{which} image: {exc}") from None
            infos[which] = info
        checked = _Checked(row, label, split, patient_id, infos["pre"], infos["post"], derived, metadata)
        if checked.stored_sha256("pre") == checked.stored_sha256("post"):
            raise ValidationError(
                "pre and post DICOM images have the same pixels"
                if derived
                else "pre and post images are the same file content"
            )
        return checked
    except ValidationError as exc:
        return _rejected(row, str(exc), identifiers)
    except SettingsError:
        raise
    except Exception as exc:  # an unexpected failure on one row must not stop the import
        return _rejected(row, f"unexpected error: {type(exc).__name__}: {exc}", identifiers)


def _rejected(row: RawRow, reason: str, identifiers: set[str]) -> Rejected:
    """A Rejected row with any DICOM identifying value taken out of its case id and reason."""
    if not identifiers:
        return Rejected(row.line, row.case_id, reason)
    case_id = WITHHELD_CASE_ID if dicom.contains_identifier(row.case_id, identifiers) else row.case_id
    return Rejected(row.line, case_id, dicom.redact(reason, identifiers))


def _dicom_patient_id(
    row: RawRow, case_id: str, headers: dict[str, dicom.DicomHeader], store: _DicomStore
) -> tuple[str, str]:
    """(patient id, where it came from) for a row with DICOM images; never the PatientID in clear.

    The manifest's patient id is kept unless it is the PatientID (then it is pseudonymised too); without
    one, the pseudonymised PatientID, else the case id. Case or patient ids holding identifiers are refused.
    """
    identifiers: set[str] = set()
    for h in headers.values():
        identifiers |= h.identifiers
    if dicom.contains_identifier(case_id, identifiers):
        raise ValidationError(
            "case id contains the DICOM's PatientID or PatientName (withheld); give the case a "
            "pseudonymous id"
        )
    found = {h.patient_id for h in headers.values() if h.patient_id}
    if len(found) > 1:
        raise ValidationError("the pre and post DICOM files name different patients (PatientID differs)")
    dicom_pid = next(iter(found), "")
    given = row.patient_id.strip()
    if given and not (dicom_pid and given.casefold() == dicom_pid.casefold()):
        if dicom.contains_identifier(given, identifiers):
            raise ValidationError(
                "patient id contains the DICOM's PatientID or PatientName; leave it empty to use the "
                "pseudonymised PatientID"
            )
        return given, "manifest"
    if dicom_pid:
        return dicom.pseudonym(dicom_pid, store.salt()), "DICOM PatientID, pseudonymised (HMAC-SHA256)"
    return case_id, "case id (the DICOM files have no PatientID)"


def _stored_path(info: ImageInfo) -> str:
    return str(info.path)


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
        batch: ImportBatch | None = None
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


def _repeated_case_ids(source: Source) -> tuple[dict[str, str], list[Rejected]]:
    """Case ids given more than once: ({case id: why all its rows are refused}, repeats to report).

    A case id whose rows disagree on the label is refused entirely (no label is imported silently).
    Repeated ``labels.csv`` lines that agree are reported; the folder reader keeps only the first, so
    the file is read again here. (Agreeing manifest rows are reported later as duplicate case ids.)
    """
    name = "labels.csv" if source.format == "folder" else source.path.name
    entries: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if source.format == "folder":
        labels_path = source.root / "labels.csv"
        if labels_path.is_file():
            for line, rec in _open_csv(labels_path)[1]:
                entries[(rec.get("case_id") or "").strip()].append((line, rec.get("label") or ""))
    else:
        for row in source.rows:
            entries[row.case_id.strip()].append((row.line, row.label))
    conflicts: dict[str, str] = {}
    repeats: list[Rejected] = []
    for case_id, lines in entries.items():
        if len(lines) < 2 or not case_id:
            continue
        if len({_label_key(label) for _, label in lines}) > 1:
            given = ", ".join(f"line {line}: {label.strip() or '(empty)'}" for line, label in lines)
            conflicts[case_id] = (
                f"case id given different labels in {name} ({given}); none is imported: keep one row"
            )
            if source.format == "folder":  # the folder row carries the first line; report the others
                repeats.extend(Rejected(line, case_id, conflicts[case_id]) for line, _ in lines[1:])
        elif source.format == "folder":
            first = lines[0][0]
            repeats.extend(
                Rejected(
                    line, case_id, f"duplicate of {name} line {first} with the same label; imported once"
                )
                for line, _ in lines[1:]
            )
    return conflicts, repeats


def _label_key(text: str) -> int | str | None:
    """What a label cell means, for comparing repeats (a bad label compares as its text)."""
    try:
        return parse_label(text)
    except ValidationError:
        return text.strip().lower()


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
