"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real server
whose jobs run on the test session's Ray: a user logs in, sees a job they submitted through the API
appear, watches its loss curve grow, scales it from the page and sees the worker chart step, cancels
it; another user sees none of it."""

import os
import shutil

import httpx
import pytest

from bench.dashboard import wait_for_body_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
JOB = {"name": "dash-live", "data": {"source": "builtin:digits", "validation_fraction": 0.2},
       "model": {"kind": "mlp", "hidden": [64]},
       "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 32, "epochs": 400, "seed": 0},
       "resources": {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 0.5},
       "checkpoint": {"every_steps": 200}}
WAIT_S = 90   # for a job to start on Ray workers or a step to show; each wait ends on what it waits for


@pytest.fixture(scope="module")
def browser():
    """A headless chromium for this module's tests."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("no chromium on this machine (apt-get install chromium): the browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def log_in(browser, url: str, token: str, path: str = "/"):
    """A new browser page logged in through the login page with `token`, at `path`."""
    page = browser.new_context().new_page()
    page.set_default_timeout(WAIT_S * 1000)
    page.goto(f"{url}{path}")
    assert page.url.startswith(f"{url}/login?next=")
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_url(f"{url}{path}")
    return page


def test_the_login_page_says_why_a_token_is_refused(browser, server):
    url, _ = server
    page = browser.new_context().new_page()
    page.goto(f"{url}/cluster")
    page.fill("#token", "et_not-a-token")
    page.click("#login")
    page.wait_for_selector("#error:has-text('unknown or revoked token')")
    assert page.url.startswith(f"{url}/login")


def test_a_user_follows_scales_and_cancels_a_job_from_the_dashboard(browser, server):
    url, tokens = server
    jobs = log_in(browser, url, tokens["ada"])
    jobs.wait_for_selector("body[data-ready='jobs']")
    submitted = httpx.post(f"{url}/api/v1/jobs", json=JOB, headers={"Authorization": f"Bearer {tokens['ada']}"})
    job_id = submitted.json()["job_id"]
    row = jobs.wait_for_selector(f"#jobs tr[data-job-id='{job_id}']")   # the page polls; no reload
    row.query_selector("a").click()
    jobs.wait_for_url(f"{url}/jobs/{job_id}")
    page = jobs
    page.wait_for_selector("body[data-ready='job']")
    wait_for_body_data(page, "workers", "2".__eq__, WAIT_S)   # FIFO gives it its maximum
    seen = int(wait_for_body_data(page, "loss-points", lambda n: int(n) >= 2, WAIT_S))
    wait_for_body_data(page, "loss-points", lambda n: int(n) > seen, WAIT_S)   # the curve grows

    page.fill("#scale-input", "1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#scale-button")
    wait_for_body_data(page, "workers", "1".__eq__, WAIT_S)
    wait_for_body_data(page, "worker-steps", lambda steps: steps.endswith("2,1"), WAIT_S)   # the chart stepped
    page.wait_for_selector("#events :text('scale_in')")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    page.wait_for_selector("#job-status:has-text('cancelled')")
    assert page.is_disabled("#cancel-button") and page.is_disabled("#scale-button")
    assert "error" not in (page.text_content("#error-banner") or "").lower()

    other = log_in(browser, url, tokens["bob"])
    other.wait_for_selector("body[data-ready='jobs']")
    assert other.query_selector_all("#jobs tr[data-job-id]") == []
    other.goto(f"{url}/jobs/{job_id}")
    other.wait_for_selector(f"#error-banner:has-text(\"no job '{job_id}'\")")
    assert httpx.get(f"{url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {tokens['bob']}"}
                     ).status_code == 404


def test_a_finished_jobs_page_is_drawn_from_the_store_alone(browser, tmp_path):
    """No Ray, no run folder: what the page shows of a job that ended comes from the store."""
    from elastrain.api import create_app
    from elastrain.api.server import serving_in_thread
    from elastrain.spec import validate_spec
    from elastrain.store import Store, connect

    store = Store(connect(f"sqlite:///{tmp_path / 'history.db'}"))
    ada, token = store.create_user("ada")
    store.submit(ada, "old-job", validate_spec({**JOB, "name": "old"}, "test").model_dump(mode="json"))
    store.update_job("old-job", status="succeeded")
    store.add_events("old-job", [{"t": 100.0 + t, "kind": kind, "step": step, "workers": n, "generation": g}
                                 for t, kind, step, n, g in ((0, "start", 0, 2, 1), (5, "scale_in", 40, 1, 2),
                                                             (9, "succeeded", 80, 1, 2))])
    store.add_metrics("old-job", [{"name": "train_loss", "step": s, "epoch": 1, "value": 2.0 / s, "t": 100.0 + s / 10}
                                  for s in range(1, 81)])
    with serving_in_thread(create_app(store, home=tmp_path / "gone")) as url:
        page = log_in(browser, url, token, "/jobs/old-job")
        page.wait_for_selector("body[data-ready='job']")
        wait_for_body_data(page, "loss-points", "80".__eq__, WAIT_S)
        assert wait_for_body_data(page, "worker-steps", bool, WAIT_S) == "2,1"
        assert page.text_content("#job-status").strip() == "succeeded" and page.is_disabled("#cancel-button")
        page.wait_for_selector("#events :text('scale_in')")


def test_a_federated_jobs_page_shows_its_rounds(browser, tmp_path):
    """Kind: the dashboard's view of a federated job (issue 32). From the store's federated_*
    series alone: a rounds chart of the clients asked / reported / dropped / late per round, and
    the bytes and privacy spent of the last round; a job that is not federated has no such card."""
    from elastrain.api import create_app
    from elastrain.api.server import serving_in_thread
    from elastrain.spec import validate_spec
    from elastrain.store import Store, connect

    store = Store(connect(f"sqlite:///{tmp_path / 'rounds.db'}"))
    ada, token = store.create_user("ada")
    spec = {**JOB, "name": "fed", "federated": {"rounds": 3, "clients_per_round": 3}}
    spec.pop("resources"), spec.pop("checkpoint")
    store.submit(ada, "fed-job", validate_spec(spec, "test").model_dump(mode="json"))
    store.submit(ada, "plain-job", validate_spec(JOB, "test").model_dump(mode="json"))
    store.update_job("fed-job", status="succeeded")
    counts = {"asked": (3, 3, 3), "reported": (3, 3, 2), "dropped": (0, 0, 1), "late": (0, 0, 0),
              "update_bytes": (8_000, 8_000, 5_300), "epsilon": (1.5, 2.25, 2.75)}
    store.add_metrics("fed-job", [
        {"name": f"federated_{'clients_' if name in ('asked', 'reported', 'dropped', 'late') else ''}{name}",
         "step": r + 1, "epoch": r + 1, "value": float(values[r]), "t": 100.0 + r} for name, values in counts.items()
        for r in range(3)] + [{"name": "val_accuracy", "step": r + 1, "epoch": r + 1, "value": 0.5 + r / 10,
                               "t": 100.0 + r} for r in range(3)])
    with serving_in_thread(create_app(store, home=tmp_path / "gone")) as url:
        page = log_in(browser, url, token, "/jobs/fed-job")
        page.wait_for_selector("body[data-ready='job']")
        assert wait_for_body_data(page, "rounds-reported", bool, WAIT_S) == "3,3,2"
        assert page.is_visible("#rounds-card") and page.is_visible("#rounds-chart canvas")
        note = page.text_content("#rounds-note")
        assert "3 round(s)" in note and "5.3 KB" in note and "ε 2.75" in note, note
        plain = log_in(browser, url, token, "/jobs/plain-job")
        plain.wait_for_selector("body[data-ready='job']")
        assert plain.is_hidden("#rounds-card")
