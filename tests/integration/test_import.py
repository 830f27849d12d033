"""Import of pairs: every kind of bad row is rejected with its reason; good rows land exactly once."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from images_factory import exif_rotated, huge_png, mode_image, rgb, truncated_jpeg
from workbench.data.importer import import_source
from workbench.data.summary import split_counts
from workbench.db.engine import session_scope
from workbench.db.models import Case, ImportBatch, Label
from workbench.errors import ValidationError


def _count(engine, model) -> int:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(model))


def _write_manifest(
    path: Path, rows: list[list[str]], header: str = "case_id,pre_path,post_path,label,patient_id"
) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header.split(","))
        w.writerows(rows)
    return path


@pytest.fixture
def messy_manifest(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A manifest mixing good rows (incl. odd formats) with every kind of bad row; returns expected reasons."""
    root = tmp_path / "data"
    outside = rgb(tmp_path / "outside.jpg", 999)
    seed = iter(range(1000))
    rows: list[list[str]] = []
    expected: dict[str, str] = {}

    def good(cid: str, pre_maker=None, post_maker=None, label: str = "0") -> None:  # type: ignore[no-untyped-def]
        pre = (pre_maker or (lambda p: rgb(p, next(seed))))(root / cid / "pre.png")
        post = (post_maker or (lambda p: rgb(p, next(seed))))(root / cid / "post.png")
        rows.append([cid, str(pre.relative_to(root)), str(post.relative_to(root)), label, f"pt-{cid}"])

    def bad(cid: str, pre: str, post: str, reason: str, label: str = "1") -> None:
        rows.append([cid, pre, post, label, f"pt-{cid}"])
        expected[cid] = reason

    for i in range(6):
        good(f"ok-{i}", label="1" if i < 2 else "0")
    good("gray", pre_maker=lambda p: mode_image(p, "L", next(seed)))
    good("sixteen", pre_maker=lambda p: mode_image(p, "I;16", next(seed)), label="Positive")
    good("rgba", post_maker=lambda p: mode_image(p, "RGBA", next(seed)), label="NEGATIVE")
    good("palette", post_maker=lambda p: mode_image(p, "P", next(seed)), label="")
    good("cmyk", pre_maker=lambda p: mode_image(p.with_suffix(".jpg"), "CMYK", next(seed)))
    good("exif", post_maker=lambda p: exif_rotated(p.with_suffix(".jpg"), next(seed)))
    # Fix paths of the cmyk/exif rows (their makers changed the suffix).
    for r in rows:
        if r[0] == "cmyk":
            r[1] = "cmyk/pre.jpg"
        if r[0] == "exif":
            r[2] = "exif/post.jpg"

    ok = rgb(root / "shared" / "ok.png", next(seed))
    truncated_jpeg(root / "trunc" / "pre.jpg", next(seed))
    bad("trunc", "trunc/pre.jpg", "shared/ok.png", "truncated or corrupt")
    (root / "zero").mkdir(parents=True)
    (root / "zero" / "pre.jpg").write_bytes(b"")
    bad("zero", "zero/pre.jpg", "shared/ok.png", "empty")
    (root / "text").mkdir()
    (root / "text" / "pre.jpg").write_text("this is not an image\n")
    bad("text", "text/pre.jpg", "shared/ok.png", "not an image")
    bad("missing", "missing/pre.png", "shared/ok.png", "not found")
    bad("dotdot", "../outside.jpg", "shared/ok.png", "escapes")
    bad("absolute", str(outside), "shared/ok.png", "absolute")
    huge_png(root / "bomb" / "pre.png")
    bad("bomb", "bomb/pre.png", "shared/ok.png", "decompression bomb")
    a = rgb(root / "badlabel" / "pre.png", next(seed))
    bad("badlabel", str(a.relative_to(root)), "shared/ok.png", "bad label", label="maybe")
    b = rgb(root / "dupid" / "pre.png", next(seed))
    # ok-0 again with another label (0, not 1): neither row is imported; ok-2 again with the same label:
    # the first row is imported, the repeat reported.
    bad("ok-0", str(b.relative_to(root)), "shared/ok.png", "given different labels", label="0")
    b2 = rgb(root / "dupid2" / "pre.png", next(seed))
    bad("ok-2", str(b2.relative_to(root)), "shared/ok.png", "duplicate case id (first on line", label="0")
    # A byte-identical copy of ok-1's pair under a new id.
    (root / "twin").mkdir()
    (root / "twin" / "pre.png").write_bytes((root / "ok-1" / "pre.png").read_bytes())
    (root / "twin" / "post.png").write_bytes((root / "ok-1" / "post.png").read_bytes())
    bad("twin", "twin/pre.png", "twin/post.png", "duplicate pair")
    c = rgb(root / "noid" / "pre.png", next(seed))
    bad("", str(c.relative_to(root)), str(ok.relative_to(root)), "empty case id")
    return _write_manifest(root / "manifest.csv", rows), expected


def test_messy_manifest_imports_exactly_the_good_rows(engine, messy_manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest, expected = messy_manifest
    result = import_source(engine, manifest, report_dir=tmp_path / "reports")
    assert result.imported == 11
    assert _count(engine, Case) == 11
    reasons = {r.case_id: r.reason for r in result.rejected}
    assert len([r for r in result.rejected if r.case_id == "ok-0"]) == 2  # both ok-0 rows
    assert set(reasons) == set(expected)
    for cid, fragment in expected.items():
        assert fragment in reasons[cid], (cid, reasons[cid])
    # The report lists each rejected row with its reason.
    with result.report_path.open() as fh:
        report = list(csv.DictReader(fh))
    assert {r["case_id"] for r in report} == set(expected)
    # Odd formats were converted, and recorded as such.
    converted = "\n".join(result.converted)
    for cid in ("gray", "sixteen", "rgba", "palette", "cmyk", "exif"):
        assert cid in converted
    with session_scope(engine) as s:
        exif = s.scalar(select(Case).where(Case.external_id == "exif"))
        assert (exif.post_width, exif.post_height) == (20, 40)  # orientation applied
        labels = dict(s.execute(select(Case.external_id, Label.value).join(Label)).all())
    assert labels["sixteen"] == 1 and labels["rgba"] == 0 and "palette" not in labels


def test_reimport_adds_and_changes_nothing(engine, messy_manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest, _ = messy_manifest
    first = import_source(engine, manifest, report_dir=tmp_path)
    with session_scope(engine) as s:
        before = {c.external_id: (c.split, c.pre_sha256) for c in s.scalars(select(Case))}
    n_labels = _count(engine, Label)
    again = import_source(engine, manifest, report_dir=tmp_path)
    assert again.imported == 0
    assert again.unchanged == first.imported
    assert _count(engine, Label) == n_labels
    with session_scope(engine) as s:
        after = {c.external_id: (c.split, c.pre_sha256) for c in s.scalars(select(Case))}
    assert after == before
    assert _count(engine, ImportBatch) == 1  # nothing new, no empty batch either


def test_strict_imports_nothing_when_a_row_is_bad(engine, messy_manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest, expected = messy_manifest
    result = import_source(engine, manifest, strict=True, report_dir=tmp_path)
    assert len(result.rejected) == len(expected) + 1  # ok-0's two rows
    assert _count(engine, Case) == 0 and _count(engine, Label) == 0 and _count(engine, ImportBatch) == 0


def test_dry_run_writes_nothing(engine, messy_manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest, _ = messy_manifest
    result = import_source(engine, manifest, dry_run=True, report_dir=tmp_path)
    assert result.imported == 0 and result.split_counts
    assert _count(engine, Case) == 0


def test_folder_format_with_labels_csv(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "folder"
    for i in range(5):
        rgb(root / f"c{i}" / "pre.jpg", 2 * i)
        rgb(root / f"c{i}" / "post.png", 2 * i + 1)
    (root / "c5").mkdir()
    rgb(root / "c5" / "pre.jpg", 50)  # post missing
    (root / "labels.csv").write_text("case_id,label,split\nc0,1,test\nc1,negative,\nc2,,\nghost,1,\n")
    result = import_source(engine, root, report_dir=tmp_path)
    reasons = {r.case_id: r.reason for r in result.rejected}
    assert result.format == "folder"
    assert result.imported == 5
    assert "no post.*" in reasons["c5"]
    assert "no folder" in reasons["ghost"]
    with session_scope(engine) as s:
        split = dict(s.execute(select(Case.external_id, Case.split)).all())
    assert split["c0"] == "test"  # a given split is honoured
    assert split["c2"] == "pool"  # unlabelled -> pool


def test_bad_manifest_header_is_one_clear_error(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "m.csv"
    path.write_text("id,pre,post\n")
    with pytest.raises(ValidationError, match="missing column"):
        import_source(engine, path)
    with pytest.raises(ValidationError, match="not found"):
        import_source(engine, tmp_path / "nope.csv")


def test_splits_grouped_by_patient_stratified_and_frozen(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "d"
    rows = []
    for i in range(200):
        rgb(root / f"c{i}" / "pre.png", 2 * i, size=(8, 8))
        rgb(root / f"c{i}" / "post.png", 2 * i + 1, size=(8, 8))
        label = "1" if i % 10 == 0 else "0"
        rows.append([f"c{i}", f"c{i}/pre.png", f"c{i}/post.png", label, f"p{i // 2}"])
    manifest = _write_manifest(root / "manifest.csv", rows[:150])
    import_source(engine, manifest)
    counts = split_counts(engine)
    total = sum(counts[s]["total"] for s in ("train", "val", "test"))
    assert total == 150
    for split, share in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(counts[split]["total"] / total - share) < 0.05, counts
        assert counts[split]["positive"] >= 1, counts
    with session_scope(engine) as s:
        first = dict(s.execute(select(Case.external_id, Case.split)).all())
        patient = dict(s.execute(select(Case.external_id, Case.patient_id)).all())
    by_patient: dict[str, set[str]] = {}
    for cid, split in first.items():
        by_patient.setdefault(patient[cid], set()).add(split)
    assert all(len(v) == 1 for v in by_patient.values())
    # A second import with more cases (one of them an unlabelled case of a known patient) moves nothing.
    rows[150][3] = ""
    rows[150][4] = "p74"  # same patient as c148 and c149, already imported
    manifest = _write_manifest(root / "manifest.csv", rows)
    import_source(engine, manifest)
    with session_scope(engine) as s:
        second = dict(s.execute(select(Case.external_id, Case.split)).all())
    assert {k: second[k] for k in first} == first
    expected = "pool" if first["c149"] == "train" else first["c149"]
    assert second["c150"] == expected


# ------------------------------------------------------------------------------------------------
# Where the report goes, and a report that cannot be written


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` unwritable for this process while the block runs.

    As root, permission bits stop nothing, so the folder gets a read-only bind mount (what
    docker-compose does to ./data), else the immutable attribute; otherwise ``chmod a-w``. Either way
    the block starts only once a write there really fails (never a silent no-op).
    """
    undo: list[str] | None = None
    if os.geteuid() == 0:
        for make, revert in (
            (["mount", "--bind", "-o", "ro", str(folder), str(folder)], ["umount", str(folder)]),
            (["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)]),
        ):
            if subprocess.run(make, capture_output=True, check=False).returncode == 0:
                undo = revert
                break
        else:
            pytest.fail(f"as root, neither a read-only bind mount nor chattr +i works on {folder}")
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError):
            (folder / ".probe").touch()
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            folder.chmod(0o755)


def _small_source(root: Path) -> Path:
    """A manifest with two good rows and one bad row (a missing image)."""
    rows = []
    for i in range(2):
        rgb(root / f"c{i}" / "pre.png", 2 * i)
        rgb(root / f"c{i}" / "post.png", 2 * i + 1)
        rows.append([f"c{i}", f"c{i}/pre.png", f"c{i}/post.png", "1" if i else "0", f"p{i}"])
    rows.append(["gone", "gone/pre.png", "c0/post.png", "1", "p9"])
    return _write_manifest(root / "manifest.csv", rows)


def test_report_goes_to_the_home_reports_folder_never_next_to_a_read_only_source(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workbench.config import get_settings

    manifest = _small_source(tmp_path / "mnt")
    with read_only(manifest.parent):
        result = import_source(engine, manifest)  # no report_dir: the UI's call
    assert result.imported == 2 and _count(engine, Case) == 2
    assert result.report_error is None
    assert result.report_path.parent == get_settings().home / "reports"
    assert {r["case_id"] for r in csv.DictReader(result.report_path.open())} == {"gone"}
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["c0", "c1", "manifest.csv"]
    with session_scope(engine) as s:  # the batch row says where its report is
        assert s.scalar(select(ImportBatch.report_path)) == str(result.report_path)


def test_an_unwritable_report_folder_never_masks_committed_rows(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest = _small_source(tmp_path / "src")
    reports = tmp_path / "reports"
    reports.mkdir()
    with read_only(reports):
        result = import_source(engine, manifest, report_dir=reports)
    assert result.imported == 2 and _count(engine, Case) == 2 and _count(engine, Label) == 2
    assert [r.case_id for r in result.rejected] == ["gone"]
    assert result.report_path is None and str(reports) in result.report_error
    note = result.report_note()
    assert note.startswith(f"the 2 imported case(s) are committed (batch {result.batch_id}), but the report")
    assert not list(reports.iterdir())  # no half report either
    # A dry run says the same without claiming a commit.
    with read_only(reports):
        dry = import_source(engine, manifest, report_dir=reports, dry_run=True)
    assert dry.report_note().startswith("the report of rejected rows could not be written")


def test_conflicting_labels_csv_rows_import_neither_label(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "folder"
    for i in range(3):
        rgb(root / f"c{i}" / "pre.png", 2 * i)
        rgb(root / f"c{i}" / "post.png", 2 * i + 1)
    (root / "labels.csv").write_text(
        "case_id,label\nc0,positive\nc0,negative\nc1,1\nc1,positive\nc2,0\nghost,1\nghost,1\n"
    )
    result = import_source(engine, root, report_dir=tmp_path / "reports")
    by_line = {r.line: (r.case_id, r.reason) for r in result.rejected}
    assert set(by_line) == {2, 3, 5, 7, 8}
    for line in (2, 3):  # both c0 rows, each naming both lines
        assert by_line[line][0] == "c0"
        assert "different labels in labels.csv (line 2: positive, line 3: negative)" in by_line[line][1]
    assert by_line[5] == ("c1", "duplicate of labels.csv line 4 with the same label; imported once")
    assert by_line[7][0] == "ghost" and "no folder" in by_line[7][1]
    assert by_line[8][0] == "ghost" and "duplicate of labels.csv line 7" in by_line[8][1]
    with session_scope(engine) as s:
        labels = dict(s.execute(select(Case.external_id, Label.value).join(Label)).all())
        cases = set(s.scalars(select(Case.external_id)))
    assert cases == {"c1", "c2"} and labels == {"c1": 1, "c2": 0}
    report = list(csv.DictReader(result.report_path.open()))
    assert [int(r["line"]) for r in report] == [2, 3, 5, 7, 8]


def test_ui_import_from_a_read_only_folder_reports_under_home(tmp_path: Path) -> None:
    """The Data page's import (no report_dir) on a read-only mount: success, report in the home."""
    from streamlit.testing.v1 import AppTest

    from workbench.config import load_settings
    from workbench.db.engine import engine_from_settings
    from workbench.db.schema import upgrade
    from workbench.users import add_user

    settings = load_settings()
    eng = engine_from_settings(settings)
    upgrade(eng)
    add_user(eng, "root", "root-password-1", "admin")
    manifest = _small_source(tmp_path / "mnt")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "ui" / "app.py"), default_timeout=60)
    at.session_state["wb_user"] = {"username": "root", "role": "admin", "via": "password"}
    at.run()
    at.switch_page("app_pages/data.py").run()
    with read_only(manifest.parent):
        at.text_input(key="import_path").input(str(manifest))
        at.button(key="FormSubmitter:form_import-Import").click().run()
    errors = "\n".join(str(e.value) for e in at.error)
    assert not at.exception and not errors, errors
    assert "imported 2, unchanged 0, rejected 1" in "\n".join(str(e.value) for e in at.success)
    reports = list((settings.home / "reports").glob("import-report-*.csv"))
    assert len(reports) == 1
    assert f"Per-row report: {reports[0]}" in "\n".join(str(c.value) for c in at.caption)
    eng.dispose()
