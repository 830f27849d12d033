"""DICOM import: decoding, refusals, de-identification (no identifier anywhere), pre/post order, end to end.

Every DICOM here is a real file written with pydicom; imports run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from sqlalchemy import Engine, MetaData, select

from conftest import run_cli
from workbench.data import dicom
from workbench.data.images import inspect_image, load_rgb
from workbench.data.importer import WITHHELD_CASE_ID, import_source
from workbench.db.engine import session_scope
from workbench.db.models import Case
from workbench.errors import SettingsError, ValidationError

# Planted, distinctive synthetic identifiers: none may appear anywhere the workbench writes.
PATIENT_ID = "LEAK-123456"
PATIENT_NAME = "ZZTEST^LEAK"
PLANTED_EXTRA = {
    "PatientBirthDate": "19450817",
    "InstitutionName": "ZZLEAK HOSPITAL",
    "AccessionNumber": "ZZACC-77331",
    "ReferringPhysicianName": "ZZDOC^PLANTED",
}
PLANTED = ("ZZTEST", "LEAK-123456", "19450817", "ZZLEAK HOSPITAL", "ZZACC-77331", "ZZDOC")


def photo(seed: int, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """A smooth colour image (JPEG-friendly), distinct per seed; size is (width, height)."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    img = base + np.stack([xx * 50 / w, yy * 50 / h, (xx + yy) * 25 / (w + h)], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_planted(path: Path, rgb: np.ndarray, encoding: str = "rgb", **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    args = {
        "encoding": encoding,
        "patient_id": PATIENT_ID,
        "patient_name": PATIENT_NAME,
        "acquired": datetime(2024, 3, 1, 9, 0),
        "extra": dict(PLANTED_EXTRA),
    }
    args.update(kwargs)
    dicom.write_dicom(path, rgb, **args)
    return path


def raw_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str,
    *,
    bits_stored: int = 8,
    signed: bool = False,
    frames: int = 1,
    jpeg: bytes | None = None,
) -> Path:
    """A DICOM file written field by field (monochrome, >8 bits, signed, multi-frame, odd cases)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"
    meta.MediaStorageSOPInstanceUID = "2.25.1234"
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = PATIENT_ID, PATIENT_NAME
    colour = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    allocated = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if jpeg is not None:
        ds.PixelData = encapsulate([jpeg])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OW" if allocated == 16 else "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("encoding", "photometric", "tolerance"),
    [("rgb", "RGB", 0.0), ("ybr_full", "YBR_FULL", 1.0), ("jpeg_baseline", "YBR_FULL_422", 3.0)],
)
def test_colour_dicoms_decode_to_the_original_rgb(tmp_path, encoding, photometric, tolerance) -> None:
    rgb = photo(1)
    path = write_planted(tmp_path / f"{encoding}.dcm", rgb, encoding)
    out = load_rgb(path)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() <= tolerance
    info = inspect_image(path)
    assert (info.format, info.mode, info.width, info.height) == ("DICOM", photometric, 48, 40)
    assert info.converted.startswith(f"DICOM {photometric}")
    assert load_rgb(path, size=(24, 20)).shape == (20, 24, 3)


def test_jpeg_baseline_goes_through_pylibjpeg(tmp_path) -> None:
    from pydicom.pixels import pixel_array

    path = write_planted(tmp_path / "j.dcm", photo(2), "jpeg_baseline")
    # The plugin the loader asks for exists and gives the same pixels as the loader.
    assert np.array_equal(pixel_array(str(path), decoding_plugin="pylibjpeg"), load_rgb(path))


def test_monochrome_dicoms_become_grey_rgb_and_monochrome1_is_inverted(tmp_path) -> None:
    grey = np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) % 256
    m2 = load_rgb(raw_dicom(tmp_path / "m2.dcm", grey.astype(np.uint8), "MONOCHROME2"))
    m1 = load_rgb(raw_dicom(tmp_path / "m1.dcm", grey.astype(np.uint8), "MONOCHROME1"))
    assert np.array_equal(m2[..., 0], grey) and np.array_equal(m2[..., 0], m2[..., 2])
    assert np.array_equal(m1[..., 1], 255 - grey)
    assert "inverted" in inspect_image(tmp_path / "m1.dcm").converted


def test_bits_stored_above_8_are_scaled_over_their_full_range(tmp_path) -> None:
    twelve = np.array([[0, 4095, 2048, 1000]], dtype=np.uint16).repeat(4, axis=0)
    out = load_rgb(raw_dicom(tmp_path / "m12.dcm", twelve, "MONOCHROME2", bits_stored=12))
    assert out[0, :, 0].tolist() == [0, 255, 128, round(1000 * 255 / 4095)]
    signed = np.array([[-32768, 32767, 0, -1]], dtype=np.int16).repeat(4, axis=0)
    out = load_rgb(raw_dicom(tmp_path / "s16.dcm", signed, "MONOCHROME2", bits_stored=16, signed=True))
    assert out[0, :, 0].tolist() == [0, 255, 128, 127]  # -1 -> 32767 -> 127.498
    assert "signed 16-bit scaled to 8 bits" in inspect_image(tmp_path / "s16.dcm").converted
    rgb16 = (photo(3).astype(np.uint16) * 257).astype(np.uint16)
    out = load_rgb(raw_dicom(tmp_path / "rgb16.dcm", rgb16, "RGB", bits_stored=16))
    assert np.array_equal(out, photo(3))


def test_grey_jpeg_dicom_decodes(tmp_path) -> None:
    grey = photo(4)[..., 0]
    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, "JPEG", quality=95)
    out = load_rgb(raw_dicom(tmp_path / "gj.dcm", grey, "MONOCHROME2", jpeg=buf.getvalue()))
    assert np.abs(out[..., 0].astype(int) - grey).mean() < 2


def test_multi_frame_is_refused_naming_the_file_and_the_frame_count(tmp_path) -> None:
    frames = np.stack([photo(5), photo(6), photo(7)])
    path = raw_dicom(tmp_path / "cine.dcm", frames, "RGB", frames=3)
    for reader in (inspect_image, load_rgb):
        with pytest.raises(
            ValidationError, match=r"multi-frame DICOM refused: .*cine\.dcm has NumberOfFrames 3"
        ):
            reader(path)


def test_unusable_dicoms_are_refused_with_a_reason(tmp_path) -> None:
    no_marker = tmp_path / "plain.dcm"
    no_marker.write_bytes(b"\0" * 300)
    with pytest.raises(ValidationError, match="no 'DICM' marker"):
        load_rgb(no_marker)
    palette = raw_dicom(tmp_path / "pal.dcm", photo(8)[..., 0], "PALETTE COLOR")
    with pytest.raises(ValidationError, match="unsupported DICOM PhotometricInterpretation PALETTE COLOR"):
        load_rgb(palette)
    big = write_planted(tmp_path / "big.dcm", photo(9))
    with pytest.raises(
        ValidationError, match=r"image too large: 48x40 = 1920 pixels exceeds the limit of 1000"
    ):
        inspect_image(big, max_pixels=1000)
    whole = write_planted(tmp_path / "cut.dcm", photo(10)).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: len(whole) - 2000])
    with pytest.raises(ValidationError, match=r"cut\.dcm"):
        load_rgb(cut)
    # A DICOM is recognised by its marker even without a .dcm suffix.
    anonymous = tmp_path / "IM000001"
    anonymous.write_bytes(whole)
    assert inspect_image(anonymous).format == "DICOM"


# ---------------------------------------------------------------------------------- salt and pseudonym


def test_salt_is_created_once_private_and_checked(tmp_path) -> None:
    home = tmp_path / "home"
    salt = dicom.load_salt(home)
    path = home / dicom.SALT_FILE
    assert len(salt) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dicom.load_salt(home) == salt
    assert dicom.pseudonym(PATIENT_ID, salt) == dicom.pseudonym(f" {PATIENT_ID} ", salt)
    assert dicom.pseudonym(PATIENT_ID, salt) != dicom.pseudonym(PATIENT_ID, b"\0" * 32)
    assert PATIENT_ID not in dicom.pseudonym(PATIENT_ID, salt)
    os.chmod(path, 0o644)
    with pytest.raises(SettingsError, match="readable by other users .*chmod 600"):
        dicom.load_salt(home)
    os.chmod(path, 0o600)
    path.write_text("not hex\n")
    with pytest.raises(SettingsError, match="corrupt"):
        dicom.load_salt(home)


# ------------------------------------------------------------------------------------------- importing


def _cases(engine: Engine) -> dict[str, Case]:
    with session_scope(engine) as s:
        cases = list(s.scalars(select(Case)))
        s.expunge_all()
    return {c.external_id: c for c in cases}


def test_dicom_folder_pairs_are_ordered_by_acquisition_time(engine, tmp_path) -> None:
    root = tmp_path / "src"
    early, late = datetime(2024, 3, 1, 10, 0), datetime(2024, 3, 1, 10, 5)
    # case-a: the later file sorts first by name; acquisition time decides.
    write_planted(root / "case-a/IMG_A.dcm", photo(20), acquired=late)
    write_planted(root / "case-a/IMG_B.dcm", photo(21), acquired=early)
    # case-b: no AcquisitionDateTime, ContentDate/ContentTime only.
    content = {"extra": {"ContentDate": "20240302", "ContentTime": "111500"}, "acquired": None}
    write_planted(root / "case-b/x1.dcm", photo(22), **content)
    content["extra"] = {"ContentDate": "20240302", "ContentTime": "110000"}
    write_planted(root / "case-b/x2.dcm", photo(23), **content)
    # case-c: equal times; case-d: no times at all; case-e: three files.
    write_planted(root / "case-c/1.dcm", photo(24), acquired=early)
    write_planted(root / "case-c/2.dcm", photo(25), acquired=early)
    write_planted(root / "case-d/1.dcm", photo(26), acquired=None)
    write_planted(root / "case-d/2.dcm", photo(27), acquired=None)
    for i in range(3):
        write_planted(root / f"case-e/{i}.dcm", photo(28 + i), acquired=early)
    # case-f: pre.dcm/post.dcm names win over times.
    write_planted(root / "case-f/pre.dcm", photo(31), acquired=late)
    write_planted(root / "case-f/post.dcm", photo(32), acquired=early)

    result = import_source(engine, root, report_dir=tmp_path / "reports")
    reasons = {r.case_id: r.reason for r in result.rejected}
    assert result.imported == 3, reasons
    assert "same AcquisitionDateTime" in reasons["case-c"]
    assert "do not both have AcquisitionDateTime, AcquisitionTime or ContentTime" in reasons["case-d"]
    assert "3 DICOM files" in reasons["case-e"]
    cases = _cases(engine)

    def stored(case: Case, which: str) -> np.ndarray:
        return load_rgb(Path(getattr(case, f"{which}_path")))

    assert np.array_equal(stored(cases["case-a"], "pre"), photo(21))
    assert np.array_equal(stored(cases["case-a"], "post"), photo(20))
    assert cases["case-a"].source_metadata["pre_post_order"] == "AcquisitionDateTime"
    assert np.array_equal(stored(cases["case-b"], "pre"), photo(23))
    assert cases["case-b"].source_metadata["pre_post_order"] == "ContentDate+ContentTime"
    assert np.array_equal(stored(cases["case-f"], "pre"), photo(31))
    assert cases["case-f"].source_metadata["pre_post_order"] == "pre.*/post.* file names"


def test_import_stores_pseudonyms_metadata_and_deidentified_pngs(engine, tmp_path) -> None:
    home = tmp_path / "home"
    src = tmp_path / "src"
    write_planted(src / "a/pre.dcm", photo(40), "jpeg_baseline", series_uid="1.2.3.4")
    write_planted(src / "a/post.dcm", photo(41), "jpeg_baseline", series_uid="1.2.3.5")
    write_planted(src / "b/pre.dcm", photo(42), "ybr_full")
    write_planted(src / "b/post.dcm", photo(43), "ybr_full")
    write_planted(src / "c/pre.dcm", photo(44), patient_id="OTHER-1")
    write_planted(src / "c/post.dcm", photo(45), patient_id="OTHER-1")
    manifest = src / "manifest.csv"
    manifest.write_text(
        "case_id,pre_path,post_path,label,patient_id\n"
        "a,a/pre.dcm,a/post.dcm,1,\n"
        f"b,b/pre.dcm,b/post.dcm,0,{PATIENT_ID}\n"
        "c,c/pre.dcm,c/post.dcm,0,site-7\n"
    )
    before = {p: p.read_bytes() for p in src.rglob("*.dcm")}
    dry = import_source(engine, manifest, dry_run=True, home=home)
    assert dry.rejected == [] and sum(n for split in dry.split_counts.values() for n in split.values()) == 3
    assert not dicom.store_dir(home).exists() or list(dicom.store_dir(home).iterdir()) == []
    result = import_source(engine, manifest, home=home)
    assert result.imported == 3 and not result.rejected
    cases = _cases(engine)
    pseudonym = dicom.pseudonym(PATIENT_ID, dicom.load_salt(home))
    # No manifest id, or the manifest id is the PatientID itself: the pseudonym, the same for both.
    assert cases["a"].patient_id == cases["b"].patient_id == pseudonym
    assert cases["c"].patient_id == "site-7"
    meta = cases["a"].source_metadata
    assert meta["pre"] == {
        "StudyDate": "20240301",
        "SeriesInstanceUID": "1.2.3.4",
        "AcquisitionDateTime": "20240301090000",
        "PhotometricInterpretation": "YBR_FULL_422",
        "TransferSyntaxUID": JPEGBaseline8Bit,
    }
    assert meta["patient_id"].startswith("DICOM PatientID, pseudonymised")
    assert cases["c"].source_metadata["patient_id"] == "manifest"
    for case in cases.values():
        for which in ("pre", "post"):
            png = Path(getattr(case, f"{which}_path"))
            assert png.parent == dicom.store_dir(home) and png.suffix == ".png"
            assert png.name == f"{getattr(case, f'{which}_sha256')}.png"
            with Image.open(png) as img:
                assert img.format == "PNG" and not img.info.get("exif") and not img.text
    # Originals untouched; staging gone; a re-import changes nothing.
    assert {p: p.read_bytes() for p in src.rglob("*.dcm")} == before
    assert [p.name for p in dicom.store_dir(home).iterdir() if p.name.startswith(".")] == []
    again = import_source(engine, manifest, home=home)
    assert (again.imported, again.unchanged, again.rejected) == (0, 3, [])


def _scan_database(engine: Engine) -> str:
    metadata = MetaData()
    metadata.reflect(engine)
    parts = []
    with engine.connect() as conn:
        for table in metadata.tables.values():
            for row in conn.execute(select(table)):
                parts.extend(
                    json.dumps(v, default=str) if isinstance(v, dict | list) else str(v) for v in row
                )
    return "\n".join(parts)


def _found(text: str | bytes) -> list[str]:
    data = text.lower() if isinstance(text, str) else text.decode("utf-8", "replace").lower()
    return [p for p in PLANTED if p.lower() in data]


def test_planted_identifiers_appear_nowhere(engine, db_url, tmp_path) -> None:
    home = Path(os.environ["WORKBENCH_HOME"])
    src = tmp_path / "dicoms"
    write_planted(src / "good1/pre.dcm", photo(60), "jpeg_baseline")
    write_planted(src / "good1/post.dcm", photo(61), "jpeg_baseline")
    write_planted(src / "good2/pre.dcm", photo(62), "ybr_full")
    write_planted(src / "good2/post.dcm", photo(63), "rgb")
    raw_dicom(src / "bad/pre.dcm", np.stack([photo(64)] * 2), "RGB", frames=2)
    write_planted(src / "bad/post.dcm", photo(65))
    write_planted(src / "named/pre.dcm", photo(66))
    write_planted(src / "named/post.dcm", photo(67))
    write_planted(src / "mixed/pre.dcm", photo(68))
    write_planted(src / "mixed/post.dcm", photo(69), patient_id="SOMEONE-ELSE")
    manifest = src / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "pre_path", "post_path", "label", "patient_id"])
        writer.writerow(["good1", "good1/pre.dcm", "good1/post.dcm", "1", ""])
        writer.writerow(["good2", "good2/pre.dcm", "good2/post.dcm", "0", PATIENT_ID])
        writer.writerow(["bad-frames", "bad/pre.dcm", "bad/post.dcm", "0", ""])
        writer.writerow([f"case-{PATIENT_ID}", "named/pre.dcm", "named/post.dcm", "0", ""])
        writer.writerow(["mixed", "mixed/pre.dcm", "mixed/post.dcm", "0", ""])
        writer.writerow(["named2", "named/pre.dcm", "named/post.dcm", "0", "ZZTEST-clinic"])
    env = {"WORKBENCH_DATABASE_URL": db_url}
    res = run_cli("import", str(manifest), env=env)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "imported 2 new case(s)" in out and "4 rejected" in out
    assert "NumberOfFrames 2" in out and WITHHELD_CASE_ID in out
    assert "name different patients" in out and "patient id contains" in out
    assert _found(out) == []
    cases = run_cli("cases", env=env)
    assert cases.returncode == 0 and _found(cases.stdout + cases.stderr) == []

    reports = list((home / "reports").glob("import-report-*.csv"))
    assert len(reports) == 1
    report = reports[0].read_text()
    assert "multi-frame DICOM refused" in report and WITHHELD_CASE_ID in report
    assert _found(_scan_database(engine)) == []
    if db_url.startswith("sqlite:///"):  # the raw file too (free pages included)
        assert _found(Path(db_url.removeprefix("sqlite:///")).read_bytes()) == []
    scanned = 0
    for path in home.rglob("*"):
        if path.is_file():
            assert _found(path.read_bytes()) == [], path
            scanned += 1
    assert scanned >= 6  # salt, report, four PNGs (and the SQLite file when it lives here)
    # The planted values really are in the originals (the scan would have found a copy).
    assert _found((src / "good1/pre.dcm").read_bytes())


def test_same_pixels_in_pre_and_post_dicoms_are_refused(engine, tmp_path) -> None:
    src = tmp_path / "src"
    write_planted(src / "p/pre.dcm", photo(80))
    write_planted(src / "p/post.dcm", photo(80), patient_id="LEAK-123456 ")
    result = import_source(engine, src, report_dir=tmp_path / "r")
    # The same pixels in pre and post are refused; the patient ids match after stripping.
    assert [r.reason for r in result.rejected] == ["pre and post DICOM images have the same pixels"]


# ---------------------------------------------------------------------------------------- end to end


def test_synth_dcm_import_pipeline_and_predictions(tmp_path) -> None:
    out = tmp_path / "synth"
    res = run_cli("synth", str(out), "--format", "dcm", "--n", "40", "--size", "96x96", "--seed", "3")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 40 and "patient_id" not in rows[0]
    assert all(r["pre_path"].endswith(".dcm") and r["post_path"].endswith(".dcm") for r in rows)
    kinds = {inspect_image(out / r["pre_path"]).mode for r in rows}
    assert kinds == {"RGB", "YBR_FULL_422", "YBR_FULL"}
    assert b"ZZSYN-" in (out / rows[0]["pre_path"]).read_bytes()
    # Same seed, same files (regenerating over its own earlier output).
    first = (out / rows[1]["post_path"]).read_bytes()
    assert (
        run_cli(
            "synth", str(out), "--format", "dcm", "--n", "40", "--size", "96x96", "--seed", "3"
        ).returncode
        == 0
    )
    assert (out / rows[1]["post_path"]).read_bytes() == first

    assert run_cli("db", "upgrade").returncode == 0
    imported = run_cli("import", str(out / "manifest.csv"))
    assert imported.returncode == 0, imported.stderr
    assert "imported 40 new case(s)" in imported.stdout
    assert "ZZSYN" not in imported.stdout + imported.stderr

    from workbench.config import load_settings
    from workbench.db.engine import engine_from_settings

    eng = engine_from_settings(load_settings())
    cases = sorted(_cases(eng).values(), key=lambda c: c.external_id)
    eng.dispose()
    assert len(cases) == 40 and all(c.patient_id.startswith(dicom.PSEUDONYM_PREFIX) for c in cases)
    assert len({c.patient_id for c in cases}) < 40  # patients with several cases keep one pseudonym
    pairs = [(c.pre_path, c.post_path) for c in cases]
    by_id = {r["case_id"]: r for r in rows}
    # The stored PNG holds exactly the pixels the loader decodes from the original DICOM.
    for c in cases[:6]:
        assert np.array_equal(load_rgb(Path(c.pre_path)), load_rgb(out / by_id[c.external_id]["pre_path"]))

    from workbench.model.builder import build_model
    from workbench.model.config import ModelConfig
    from workbench.model.inference import predict_pairs
    from workbench.model.pipeline import make_dataset

    labels = [int(by_id[c.external_id]["label"]) for c in cases]
    ds = make_dataset(pairs, labels, input_size=(32, 32), backbone="small_cnn", batch_size=8)
    inputs, y = next(iter(ds))
    assert tuple(inputs["pre"].shape) == (8, 32, 32, 3) and tuple(inputs["post"].shape) == (8, 32, 32, 3)
    assert tuple(y.shape) == (8, 1)
    cfg = ModelConfig.from_dict(
        {
            "backbone": "small_cnn",
            "input_size": [32, 32],
            "token_dim": 16,
            "heads": 2,
            "key_dim": 8,
            "dropout": 0.2,
            "shared_backbone": False,
            "weights": None,
            "cnn_width": 4,
        }
    )
    model = build_model(cfg)
    stored = predict_pairs(model, pairs, batch_size=16)
    assert stored["probability"].shape == (40,)
    assert np.all((stored["probability"] >= 0) & (stored["probability"] <= 1))
    # Predicting straight from the original DICOM files gives the same answers.
    originals = [
        (out / by_id[c.external_id]["pre_path"], out / by_id[c.external_id]["post_path"]) for c in cases
    ]
    direct = predict_pairs(model, originals, batch_size=16)
    np.testing.assert_allclose(direct["probability"], stored["probability"], rtol=1e-5, atol=1e-6)

    # The product path: train a (tiny) version on the imported DICOM cases, score the test split.
    tiny = json.dumps(
        {
            "model": {"input_size": [32, 32], "token_dim": 16, "heads": 2, "key_dim": 8, "cnn_width": 8},
            "train": {"phase1_batch": 8, "patience": 100, "learning_check": "warn"},
        }
    )
    trained = run_cli("train", "--epochs", "2", "--overrides", tiny, "--evaluate-on", "", timeout=600)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    version = re.search(r"model version (\d+)", trained.stdout)
    assert version, trained.stdout
    evaluated = run_cli("evaluate", version.group(1), "--split", "test", "--no-baseline", timeout=600)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "Evaluation of split test (n=" in evaluated.stdout
    home = Path(os.environ["WORKBENCH_HOME"])
    for path in home.rglob("*"):
        if path.is_file():
            assert b"ZZSYN" not in path.read_bytes(), path
    assert "ZZSYN" not in trained.stdout + evaluated.stdout


def test_configured_salt_setting_replaces_the_salt_file(engine, tmp_path, monkeypatch) -> None:
    """WORKBENCH_ID_SALT (for installations that keep secrets outside the home folder) is used as is."""
    from workbench.config import get_settings

    salt_hex = "ab" * 32
    monkeypatch.setenv("WORKBENCH_ID_SALT", salt_hex)
    get_settings.cache_clear()
    home = tmp_path / "home"
    src = tmp_path / "src"
    write_planted(src / "a/pre.dcm", photo(50), "jpeg_baseline")
    write_planted(src / "a/post.dcm", photo(51), "jpeg_baseline")
    (src / "manifest.csv").write_text("case_id,pre_path,post_path,label\na,a/pre.dcm,a/post.dcm,1\n")
    result = import_source(engine, src / "manifest.csv", home=home)
    assert result.imported == 1
    assert _cases(engine)["a"].patient_id == dicom.pseudonym(PATIENT_ID, bytes.fromhex(salt_hex))
    assert not (home / dicom.SALT_FILE).exists()
    monkeypatch.setenv("WORKBENCH_ID_SALT", "not-hex")
    get_settings.cache_clear()
    with pytest.raises(Exception, match="64 hex digits"):
        get_settings()
    get_settings.cache_clear()
