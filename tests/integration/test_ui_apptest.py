"""The Streamlit pages run headless with AppTest on a real SQLite workbench (real images, real broker)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select, update
from streamlit.testing.v1 import AppTest

from factories import make_cases, make_version, predict_with_temperature
from workbench.active.labelling_queue import claim_next, enqueue
from workbench.active.strategies import Selected
from workbench.actors import LOCAL_OPERATOR
from workbench.config import load_settings
from workbench.data.importer import import_source
from workbench.data.synth import generate_dataset
from workbench.db.engine import create_db_engine, engine_from_settings, session_scope
from workbench.db.models import Case, Job, Label, ModelVersion, Promotion, QueueItem, Round, utcnow
from workbench.db.schema import upgrade
from workbench.errors import PermissionDenied
from workbench.jobs import store
from workbench.jobs.submit import submit_job
from workbench.model.predictions import write_predictions
from workbench.users import add_user, authenticate

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
TIMEOUT = 60
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "root": "root-password"}


@dataclass
class Seeded:
    """A workbench home with users, pool cases (real images), a round, a scored version and a queue."""

    engine: Engine
    home: Path
    round_id: int
    version_id: int
    item_ids: list[int]
    case_ids: list[int]


def seed_workbench(root: Path, engine: Engine, n_cases: int = 12) -> Seeded:
    """Import synthetic pairs (real JPEG files under ``root``), score the pool with a version and queue
    it in round 1, on an empty database behind ``engine``."""
    upgrade(engine)
    add_user(engine, "alice", PASSWORDS["alice"], "labeller")
    add_user(engine, "bob", PASSWORDS["bob"], "labeller")
    add_user(engine, "root", PASSWORDS["root"], "admin")
    synth = generate_dataset(
        root / "synth", n=n_cases + 2, unlabelled_fraction=0.86, size=(192, 144), seed=3, difficulty="easy"
    )
    import_source(engine, synth.manifest, requester=LOCAL_OPERATOR, report_dir=root / "reports")
    with session_scope(engine) as s:
        pool = list(s.scalars(select(Case.id).where(Case.split == "pool").order_by(Case.id)))
    assert len(pool) >= 6, "the seed must give a queue to label"
    version_id = make_version(engine)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, len(pool))
    write_predictions(engine, version_id, pool, np.log(p / (1 - p)), p, rng.uniform(0.01, 0.2, len(pool)))
    with session_scope(engine) as s:
        s.execute(
            update(ModelVersion)
            .where(ModelVersion.id == version_id)
            .values(threshold=0.3, threshold_policy="sensitivity>=0.9")
        )
        rnd = Round(
            number=1, status="labelling", model_version_id=version_id, threshold=0.3, batch_size=len(pool)
        )
        s.add(rnd)
        s.flush()
        round_id = rnd.id
    selected = [
        Selected(cid, "near_threshold", float(abs(pi - 0.3)), f"p={pi:.2f} is near the threshold 0.30")
        for cid, pi in zip(pool, p, strict=True)
    ]
    items = enqueue(engine, selected, round_id=round_id)
    return Seeded(engine, root, round_id, version_id, items, pool)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """One seeded database (and its images) per test session; each test works on a copy of it."""
    root = tmp_path_factory.mktemp("ui-template")
    engine = create_db_engine(f"sqlite:///{root / 'workbench.db'}")
    seeded = seed_workbench(root, engine)
    engine.dispose()  # checkpoints the WAL into the file that tests copy
    return seeded


@pytest.fixture
def seeded(template: Seeded) -> Iterator[Seeded]:
    """A fresh copy of the template database in this test's WORKBENCH_HOME (set by conftest)."""
    import workbench_workers.app

    workbench_workers.app.get_app.cache_clear()  # the Celery app must use this test's broker
    settings = load_settings()
    settings.ensure_home()
    shutil.copyfile(template.home / "workbench.db", settings.home / "workbench.db")
    engine = engine_from_settings(settings)
    yield replace(template, engine=engine, home=settings.home)
    engine.dispose()


def app_as(user: str | None, role: str = "labeller") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if user is not None:
        at.session_state["wb_user"] = {"username": user, "role": role, "via": "password"}
    return at.run()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(elements) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(e.value) for e in elements)


def expert_labels(engine: Engine) -> list[Label]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Label).where(Label.source != "import").order_by(Label.id)))


def external_to_id(engine: Engine, external_id: str) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(Case.id).where(Case.external_id == external_id))


def test_login_form_refuses_a_wrong_password_then_logs_in(seeded: Seeded) -> None:
    at = app_as(None)
    assert not at.exception
    at.text_input(key="login_username").input("alice")
    at.text_input(key="login_password").input("wrong-password")
    at.button(key="FormSubmitter:login-Log in").click().run()
    assert "wrong password" in texts(at.error)
    assert not at.metric  # still on the login page

    at.text_input(key="login_username").input("alice")
    at.text_input(key="login_password").input(PASSWORDS["alice"])
    at.button(key="FormSubmitter:login-Log in").click().run()
    assert not at.exception and not at.error
    assert at.session_state["wb_user"]["username"] == "alice"
    assert metric(at, "Case").startswith("synth-")  # the Label page claimed a case
    assert "Signed in as **alice** (labeller)" in texts(at.sidebar.markdown)


def test_label_lands_in_the_database_with_the_user_name(seeded: Seeded) -> None:
    at = app_as("alice")
    shown = metric(at, "Case")
    assert metric(at, "Operating threshold") == "0.300"
    assert "near_threshold" in texts(at.markdown)
    assert "0/" in at.get("progress")[0].proto.text
    assert len(at.image) == 2  # pre and post side by side

    at.button(key="btn_positive").click().run()
    labels = expert_labels(seeded.engine)
    assert [(lab.labeller, lab.value, lab.source) for lab in labels] == [("alice", 1, "expert")]
    assert labels[0].case_id == external_to_id(seeded.engine, shown)
    assert f"case {shown} = Positive" in texts(at.success)
    assert metric(at, "Case") != shown  # the next case is on screen
    progress_text = at.get("progress")[0].proto.text
    assert "1/" in progress_text and "1 positive found" in progress_text

    nxt = metric(at, "Case")
    at.button(key="btn_negative").click().run()
    assert [(lab.value, lab.case_id) for lab in expert_labels(seeded.engine)][-1] == (
        0,
        external_to_id(seeded.engine, nxt),
    )


def test_undo_appends_a_correction_and_shows_the_case_again(seeded: Seeded) -> None:
    at = app_as("alice")
    first = metric(at, "Case")
    at.button(key="btn_positive").click().run()
    assert metric(at, "Case") != first
    at.button(key="btn_undo").click().run()
    assert metric(at, "Case") == first  # re-opened and leased back to alice
    rows = expert_labels(seeded.engine)
    assert [(r.source, r.value) for r in rows] == [("expert", 1), ("correction", None)]
    assert f"withdraws label #{rows[0].id}" in rows[1].note
    assert "Undone" in texts(at.success)
    at.button(key="btn_negative").click().run()
    rows = expert_labels(seeded.engine)
    assert [(r.source, r.value) for r in rows] == [("expert", 1), ("correction", None), ("expert", 0)]
    assert len({r.case_id for r in rows}) == 1  # history kept: three rows on the same case


def test_unsure_requeues_for_someone_else_and_skip_writes_no_label(seeded: Seeded) -> None:
    at = app_as("alice")
    unsure_case = metric(at, "Case")
    at.button(key="btn_unsure").click().run()
    rows = expert_labels(seeded.engine)
    assert [(r.labeller, r.value) for r in rows] == [("alice", None)]
    assert "another expert" in texts(at.success)
    unsure_id = external_to_id(seeded.engine, unsure_case)
    with session_scope(seeded.engine) as s:
        reopened = s.scalar(
            select(QueueItem).where(QueueItem.case_id == unsure_id, QueueItem.status == "queued")
        )
        assert reopened is not None and reopened.exclude_labeller == "alice"

    skipped_case = metric(at, "Case")
    at.button(key="btn_skip").click().run()
    assert len(expert_labels(seeded.engine)) == 1  # a skip writes no label
    assert metric(at, "Case") not in (skipped_case, unsure_case)
    assert "Skipped" in texts(at.info)
    skipped_id = external_to_id(seeded.engine, skipped_case)
    with session_scope(seeded.engine) as s:
        item = s.scalar(select(QueueItem).where(QueueItem.case_id == skipped_id))
        assert (item.status, item.exclude_labeller, item.lease_holder) == ("queued", "alice", None)

    # Both cases go to bob, never back to alice.
    seen_by_bob = set()
    while (claim := claim_next(seeded.engine, "bob")) is not None:
        seen_by_bob.add(claim.case_id)
        with session_scope(seeded.engine) as s:  # release bob's lease cheaply: mark done
            s.execute(update(QueueItem).where(QueueItem.id == claim.item_id).values(status="done"))
    assert {unsure_id, skipped_id} <= seen_by_bob


def test_a_stale_lease_gives_a_clear_message_and_no_label(seeded: Seeded) -> None:
    at = app_as("alice")
    shown = metric(at, "Case")
    with session_scope(seeded.engine) as s:  # the lease runs out while alice looks at the case
        s.execute(
            update(QueueItem)
            .where(QueueItem.lease_holder == "alice")
            .values(lease_expires_at=utcnow() - timedelta(seconds=5))
        )
    at.button(key="btn_positive").click().run()
    assert f"your lease on case {shown} expired" in texts(at.warning)
    assert expert_labels(seeded.engine) == []
    assert not at.exception


def test_empty_queue_says_so_and_what_an_admin_can_do(seeded: Seeded) -> None:
    with session_scope(seeded.engine) as s:
        s.execute(update(QueueItem).values(status="cancelled"))
    at = app_as("root", "admin")
    assert not at.exception
    assert "queue is empty" in texts(at.info)
    assert "workbench submit round" in texts(at.markdown)


def test_a_labeller_cannot_submit_training(seeded: Seeded) -> None:
    import workbench_workers.app

    with pytest.raises(PermissionDenied, match="only an admin may train"):
        submit_job(seeded.engine, "train", {}, requester="alice", send=workbench_workers.app.send_job)
    at = app_as("alice")
    at.switch_page("app_pages/jobs.py").run()
    assert not at.exception
    at.button(key="FormSubmitter:form_train-Submit training").click().run()
    assert "only an admin may train" in texts(at.error)
    assert store.list_jobs(seeded.engine) == []


def test_admin_submits_then_cancels_a_job_through_the_real_broker(seeded: Seeded) -> None:
    at = app_as("root", "admin")
    at.switch_page("app_pages/jobs.py").run()
    at.number_input(key="train_epochs").set_value(3)
    at.button(key="FormSubmitter:form_train-Submit training").click().run()
    assert not at.exception and not at.error, texts(at.error)
    jobs = store.list_jobs(seeded.engine)
    assert [(j.kind, j.status, j.requester, j.params["epochs"]) for j in jobs] == [
        ("train", "queued", "root", 3)
    ]
    job_id = jobs[0].id
    assert f"Submitted train job {job_id}" in texts(at.success)
    with session_scope(seeded.engine) as s:
        assert s.get(Job, job_id).celery_task_id  # the broker took the message
    assert (seeded.home / "broker.db").is_file()

    at.run()  # the job list (a fragment) shows the queued job with a cancel button
    at.button(key=f"cancel_{job_id}").click().run()
    assert store.get_job(seeded.engine, job_id).status == "cancelled"
    assert f"Job {job_id} cancelled" in texts(at.success)


def test_broker_down_shows_one_clear_error(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench_workers.app

    monkeypatch.setenv("WORKBENCH_BROKER_URL", "redis://127.0.0.1:1/0")
    workbench_workers.app.get_app.cache_clear()
    from workbench.config import get_settings

    get_settings.cache_clear()
    at = app_as("root", "admin")
    at.switch_page("app_pages/jobs.py").run()
    at.button(key="FormSubmitter:form_train-Submit training").click().run()
    assert not at.exception
    assert "broker unreachable" in texts(at.error)
    assert [j.status for j in store.list_jobs(seeded.engine)] == ["failed"]
    assert "failed: broker unreachable" in texts(at.error)  # and the job list shows the failed job


def test_database_unreachable_or_behind_is_one_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    at = app_as(None)
    assert not at.exception
    assert "database is unreachable" in texts(at.error)
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    at = app_as(None)
    assert not at.exception
    assert "workbench db upgrade" in texts(at.error)


def _calibrated_versions(seeded: Seeded) -> list[int]:
    from workbench.calibration.service import calibrate_version

    ids = make_cases(seeded.engine, {"val": 80, "test": 80}, positive_rate=0.25, seed=7)
    both = ids["val"] + ids["test"]
    out = []
    for temperature in (3.0, 1.0):
        vid = make_version(seeded.engine)
        predict_with_temperature(seeded.engine, vid, both, temperature, seed=1)
        calibrate_version(seeded.engine, vid, ["identity", "temperature"], n_boot=100)
        out.append(vid)
    return out


def test_calibration_page_overlays_and_compares_two_versions(seeded: Seeded) -> None:
    v1, v2 = _calibrated_versions(seeded)
    at = app_as("alice")
    at.switch_page("app_pages/calibration.py").run()
    assert not at.exception and not at.error, texts(at.error)
    assert sorted(at.multiselect(key="cal_versions").value) == sorted([v1, v2])
    at.multiselect(key="cal_methods_pick").set_value(["identity", "temperature"]).run()
    assert not at.exception
    assert len(at.image) >= 1  # the reliability figure
    metrics = at.dataframe[0].value
    assert set(metrics["version"]) == {v1, v2}
    assert {"ECE (15 equal-width bins)", "ECE (equal-mass bins)", "Brier", "NLL", "n"} <= set(metrics.columns)
    assert set(metrics["split"]) >= {"test"}
    at.button(key="cmp_go").click().run()
    paired = at.dataframe[1].value
    assert list(paired["metric"]) == ["brier", "nll", "ece"]
    assert set(paired["verdict"]) <= {"A better", "B better", "inconclusive"}
    # v1 (over-confident, T=3) uncalibrated is worse than v2 uncalibrated on Brier: B better.
    at.selectbox(key="cmp_a").set_value((v1, "identity"))
    at.selectbox(key="cmp_b").set_value((v2, "identity")).run()
    assert len(at.dataframe) == 3  # inputs changed: the old comparison is no longer shown
    at.button(key="cmp_go").click().run()
    paired = at.dataframe[1].value
    brier = paired[paired["metric"] == "brier"].iloc[0]
    assert brier["A − B"] > 0
    sweep = at.dataframe[-1].value
    assert len(sweep) == 21 and sweep["chosen"].sum() >= 1


def test_models_page_promotes_for_admins_only(seeded: Seeded) -> None:
    at = app_as("alice")
    at.switch_page("app_pages/models.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert seeded.version_id in set(table["version"])
    at.text_input(key="promote_reason").input("best so far")
    at.button(key="FormSubmitter:form_promote-Promote").click().run()
    assert "only an admin may promote" in texts(at.error)

    at = app_as("root", "admin")
    at.switch_page("app_pages/models.py").run()
    at.text_input(key="promote_reason").input("best so far")
    at.button(key="FormSubmitter:form_promote-Promote").click().run()
    assert not at.error, texts(at.error)
    with session_scope(seeded.engine) as s:
        promo = s.scalar(select(Promotion))
        assert (promo.model_version_id, promo.promoted_by, promo.reason) == (
            seeded.version_id,
            "root",
            "best so far",
        )
    at.run()
    assert "current best" in " ".join(at.dataframe[0].value["status"])
    # A version without a calibrated artifact cannot be exported: one clear line, no traceback.
    at.button(key="export_build").click().run()
    assert not at.exception and len(at.error) == 1
    assert f"version {seeded.version_id}" in texts(at.error).lower()

    alice = app_as("alice")
    alice.switch_page("app_pages/models.py").run()
    alice.button(key="export_build").click().run()
    assert "only an admin may export" in texts(alice.error)


def test_data_page_shows_counts_and_imports_for_admins(seeded: Seeded, tmp_path: Path) -> None:
    more = generate_dataset(
        tmp_path / "more", n=4, unlabelled_fraction=0.5, size=(64, 48), seed=11, difficulty="easy"
    )
    with session_scope(seeded.engine) as s:
        before = len(s.scalars(select(Case.id)).all())
    at = app_as("alice")
    at.switch_page("app_pages/data.py").run()
    assert not at.exception and not at.error, texts(at.error)
    counts = at.dataframe[0].value.set_index("split")
    assert counts.loc["pool", "total"] == len(seeded.case_ids)
    assert counts["total"].sum() == before
    at.text_input(key="import_path").input(str(more.manifest))
    at.button(key="FormSubmitter:form_import-Import").click().run()
    assert "only an admin may import" in texts(at.error)

    at = app_as("root", "admin")
    at.switch_page("app_pages/data.py").run()
    at.text_input(key="import_path").input(str(more.manifest))
    at.button(key="FormSubmitter:form_import-Import").click().run()
    assert "imported 0, unchanged 0, rejected 4" in texts(at.success)  # the case ids are taken
    report = at.dataframe[-1].value
    assert list(report.columns) == ["line", "case id", "reason"] and len(report) == 4
    assert set(report["reason"]) == {"case id already imported with different image content"}

    renamed = more.manifest.with_name("renamed.csv")
    renamed.write_text(re.sub(r"(?m)^synth-", "extra-", more.manifest.read_text()))  # new ids, same files
    at.text_input(key="import_path").input(str(renamed))
    at.button(key="FormSubmitter:form_import-Import").click().run()
    assert not at.error, texts(at.error)
    assert "imported 4, unchanged 0, rejected 0" in texts(at.success)
    with session_scope(seeded.engine) as s:
        assert len(s.scalars(select(Case.id)).all()) == before + 4


def test_admin_manages_users_and_a_disabled_user_is_logged_out(seeded: Seeded) -> None:
    alice = app_as("alice")
    assert metric(alice, "Case").startswith("synth-")
    with pytest.raises(ValueError):  # the Users page is not even registered for a labeller
        alice.switch_page("app_pages/users.py")

    at = app_as("root", "admin")
    at.switch_page("app_pages/users.py").run()
    at.text_input(key="new_user_name").input("carol")
    at.text_input(key="new_user_pw").input("carol-password")
    at.button(key="FormSubmitter:form_add_user-Add user").click().run()
    assert not at.error, texts(at.error)
    assert "User carol added as labeller." in texts(at.success)
    assert "carol" in set(at.dataframe[0].value["user"])
    assert authenticate(seeded.engine, "carol", "carol-password") is not None

    at.selectbox(key="active_user").set_value("alice")
    at.radio(key="active_value").set_value("disabled")
    at.button(key="FormSubmitter:form_active-Apply").click().run()
    assert "User alice is now disabled." in texts(at.success)
    alice.run()  # alice's next click: her session ends and the login form is back
    assert not alice.metric and "alice is unknown or disabled" in texts(alice.warning)
    assert alice.text_input(key="login_username") is not None


OIDC_SECRETS = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a-cookie-secret-of-some-length-0123456789",
    "client_id": "workbench",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
}


def oidc_app(user_info: dict) -> AppTest:  # type: ignore[type-arg]
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets["auth"] = OIDC_SECRETS
    at.user = user_info
    return at.run()


def test_with_an_oidc_provider_the_identity_comes_from_st_user(seeded: Seeded) -> None:
    at = oidc_app({"is_logged_in": False})
    assert not at.exception
    assert [b.key for b in at.button] == ["oidc_login"]  # no password form
    add_user(seeded.engine, "dana@example.org", None, "labeller")  # an OIDC-only account
    at = oidc_app({"is_logged_in": True, "email": "dana@example.org", "email_verified": True})
    assert not at.exception and not at.error, texts(at.error)
    assert "Signed in as **dana@example.org** (labeller)" in texts(at.sidebar.markdown)
    at.button(key="btn_negative").click().run()
    assert [(r.labeller, r.value) for r in expert_labels(seeded.engine)] == [("dana@example.org", 0)]


def test_a_first_oidc_login_waits_for_an_admin_to_approve(seeded: Seeded) -> None:
    at = oidc_app({"is_logged_in": True, "email": "erin@example.org", "email_verified": True})
    assert not at.error, texts(at.error)
    assert "waiting for an admin to approve" in texts(at.info) and not at.sidebar.markdown


def test_an_empty_workbench_says_what_to_do_on_every_page() -> None:
    engine = engine_from_settings(load_settings())  # conftest's fresh WORKBENCH_HOME
    upgrade(engine)
    add_user(engine, "root", PASSWORDS["root"], "admin")
    at = app_as("root", "admin")
    assert "queue is empty" in texts(at.info)
    expected = {
        "app_pages/jobs.py": "No jobs yet",
        "app_pages/calibration.py": "No calibrated model version yet",
        "app_pages/models.py": "No model version yet",
        "app_pages/data.py": "No active-learning round yet",
    }
    for page, hint in expected.items():
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, texts(at.error))
        assert hint in texts(at.info), page
    engine.dispose()


def test_read_helpers_for_the_pages(seeded: Seeded) -> None:
    from workbench.active.labelling_queue import submit_label
    from workbench.db.models import Prediction
    from workbench.read import case_context, rounds

    start = rounds.label_history(seeded.engine)
    assert [r["round"] for r in start] == [0, 1]
    assert {**start[0], "round": 1} == start[1]  # nothing labelled in round 1 yet
    assert start[0]["pool_unlabelled"] == len(seeded.case_ids)
    for value in (1, 0):
        item = claim_next(seeded.engine, "alice")
        submit_label(seeded.engine, item.item_id, "alice", value)
    before, after = rounds.label_history(seeded.engine)
    assert after["labelled"] == before["labelled"] + 2
    assert (after["positive"], after["negative"]) == (before["positive"] + 1, before["negative"] + 1)
    assert after["pool_unlabelled"] == before["pool_unlabelled"] - 2

    case_id = seeded.case_ids[0]
    ctx = case_context.case_context(seeded.engine, case_id, seeded.round_id)
    with session_scope(seeded.engine) as s:
        pred = s.scalar(
            select(Prediction).where(
                Prediction.case_id == case_id, Prediction.model_version_id == seeded.version_id
            )
        )
        raw, unc = pred.probability, pred.uncertainty
    assert ctx.version_id == seeded.version_id and ctx.threshold == 0.3
    assert ctx.probability == pytest.approx(raw) and ctx.uncertainty == pytest.approx(unc)
    assert ctx.calibrated == pytest.approx(raw)  # no calibration yet: identity
    assert rounds.current_round(seeded.engine).id == seeded.round_id
    unscored = case_context.case_context(seeded.engine, 10_000)
    assert unscored.calibrated is None and "has no prediction for this case" in unscored.note
