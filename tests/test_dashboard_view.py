"""What the dashboard shows of a job, in a real browser (Debian's chromium, driven by Playwright)
against a real server over a real SQLite store and run folder (no Ray: the jobs are written into the
store as their drivers write them), and what it costs to load, over real HTTP.

Each test names the kind of fault (issue 27, finding 20) it guards against."""

import re
import time
from datetime import UTC, datetime

import httpx
import pytest

from bench.dashboard import wait_for_body_data
from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.runs import JobStatus, RunFolder
from elastrain.spec import validate_spec
from elastrain.store import Store, connect
from tests.test_dashboard_browser import JOB, WAIT_S, browser, log_in  # noqa: F401 (browser: a fixture)

PAGES = ("/", "/jobs/ended-job", "/jobs/live-job", "/cluster", "/models", "/studies", "/simulations")
PHONE_WIDTH = 390
GAP_S = 60.0   # from the job's start to its first step: the queue, Ray and the workers' start-up


def _naive_utc(t: float) -> datetime:
    """Epoch seconds as the store keeps times (UTC, without a zone)."""
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def _ended_job(store: Store, owner, now: float) -> float:
    """A short job that ended: started at `now` - 100 s, trained 8 s after GAP_S of start-up, on 2
    workers and then 1 (min 1, max 2); the job row says 0 workers, as it does for every ended job.
    Returns when training began (its start event)."""
    started = now - 100
    began = started + GAP_S
    store.submit(owner, "ended-job", validate_spec({**JOB, "name": "ended"}, "test").model_dump(mode="json"))
    store.update_job("ended-job", status="succeeded", workers=0, submitted_at=_naive_utc(started - 1),
                     started_at=_naive_utc(started), finished_at=_naive_utc(began + 8.6))
    store.add_events("ended-job", [{"t": began + t, "kind": kind, "step": step, "workers": n, "generation": g}
                                   for t, kind, step, n, g in ((0, "start", 0, 2, 1), (5, "scale_in", 40, 1, 2),
                                                               (8.5, "succeeded", 80, 1, 2))])
    store.add_metrics("ended-job", [{"name": "train_loss", "step": s, "epoch": 1, "value": 2.0 / s,
                                     "t": began + s / 10} for s in range(1, 81)])
    return began


def _live_job(store: Store, owner, home, now: float) -> None:
    """A job running at 82 %, whose driver has just been started again (after a restart of the
    server): its status knows the step, the total and the batch, not yet a samples/s of its own;
    the samples/s it measured before are in the store."""
    store.submit(owner, "live-job", validate_spec({**JOB, "name": "live"}, "test").model_dump(mode="json"))
    store.update_job("live-job", status="running", workers=2, started_at=_naive_utc(now - 30))
    store.add_events("live-job", [{"t": now - 25, "kind": "start", "step": 0, "workers": 2, "generation": 1}])
    store.add_metrics("live-job", [{"name": "samples_per_s", "step": 100 * i, "epoch": 1, "value": 1600.0,
                                    "t": now - 25 + 2 * i} for i in range(1, 9)])
    folder = RunFolder.of(home, "live-job")
    folder.path.mkdir(parents=True)
    folder.write_status(JobStatus("live-job", "running", workers=2, generation=1, step=820, epoch=15,
                                  total_steps=1000, batch_size=32, updated=now))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server over a store holding an ended job and a running one: its URL, ada's token and when
    the ended job began training."""
    folder = tmp_path_factory.mktemp("dash-view")
    store = Store(connect(f"sqlite:///{folder / 'history.db'}"))
    ada, token = store.create_user("ada")
    now = time.time()
    began = _ended_job(store, ada, now)
    _live_job(store, ada, folder / "home", now)
    with serving_in_thread(create_app(store, home=folder / "home")) as url:
        yield url, token, began


def fact(page, label: str) -> str:
    """The text of the job page's fact `label` (e.g. "Workers"), once drawn."""
    page.wait_for_selector("body[data-ready='job']")
    return page.inner_text(f".fact:has(.fact-label:text-is('{label}')) .fact-value").strip()


def test_a_short_jobs_charts_start_when_it_began_training(browser, site):  # noqa: F811
    """Kind: a short job's charts started at its start (before the queue and the workers' start-up),
    so its curves sat in the right 15 % of each chart. They start at its first step now."""
    url, token, began = site
    page = log_in(browser, url, token, "/jobs/ended-job")
    wait_for_body_data(page, "loss-points", "80".__eq__, WAIT_S)
    start = float(wait_for_body_data(page, "chart-from", bool, 20))
    end = float(wait_for_body_data(page, "chart-to", bool, 20))
    assert start == pytest.approx(began, abs=0.01)
    first_loss = began + 0.1
    assert (first_loss - start) / (end - start) < 0.05   # the curve begins at the left edge
    assert end - start < 10   # 8.6 s of training, not the minute of start-up before it


def test_an_ended_job_shows_its_last_group_and_cannot_be_scaled(browser, site):  # noqa: F811
    """Kind: an ended job's page showed its worker bounds as if it could still scale ("1 (1–2)"),
    a scale box reading "0" (the job row's count after the end) and, its run folder gone, step
    "0 (epoch 0)". It shows the group's last size and step, and the disabled scale box holds that size."""
    url, token, _ = site
    page = log_in(browser, url, token, "/jobs/ended-job")
    wait_for_body_data(page, "events", "3".__eq__, WAIT_S)
    assert fact(page, "Workers") == "1 at the end"
    assert fact(page, "Step") == "80"   # its run folder is gone: the last event's step, not "0 (epoch 0)"
    assert page.input_value("#scale-input") == "1"
    assert page.is_disabled("#scale-input") and page.is_disabled("#scale-button")


def test_a_running_job_shows_samples_per_second_and_eta_from_the_data_there_is(browser, site):  # noqa: F811
    """Kind: a running job at 82 % showed samples/s and ETA as "—" while its driver had no reading of
    its own (its first second after a start or a resume; the job row and the status are read
    apart). The page uses the samples/s recorded in the store and the steps left in the status."""
    url, token, _ = site
    page = log_in(browser, url, token, "/jobs/live-job")
    wait_for_body_data(page, "workers", "2".__eq__, WAIT_S)
    assert fact(page, "Progress").endswith("82 %")
    assert fact(page, "Samples/s") == "1,600"
    assert fact(page, "ETA") == "4 s"   # 180 steps of 32 samples at 1,600 samples/s: 3.6 s


def test_a_job_without_prices_shows_its_usage_alone(browser, site):  # noqa: F811
    """Kind: with no price set, the cost read "— · 2 worker-s". It reads the usage alone."""
    url, token, _ = site
    page = log_in(browser, url, token, "/jobs/ended-job")
    wait_for_body_data(page, "events", "3".__eq__, WAIT_S)
    cost = fact(page, "Cost")
    assert re.fullmatch(r"\d+ worker-s", cost), cost   # 2 workers for 5 s, then 1 for 3.6 s: 14


def test_no_page_is_wider_than_a_phone(browser, site):  # noqa: F811
    """Kind: at 390 px wide the pages overflowed to 633 px (the navigation, the charts' and the
    tables' columns); a phone had to scroll sideways to reach the menu. Now the navigation wraps,
    the columns fit and tables scroll inside their own box."""
    url, token, _ = site
    page = log_in(browser, url, token)
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 800})
    for path in PAGES:
        page.goto(f"{url}{path}")
        page.wait_for_selector("body[data-ready]")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE_WIDTH, path
        menu = page.query_selector("#nav a[href='/simulations']").bounding_box()
        assert menu["x"] + menu["width"] <= PHONE_WIDTH, path
    page.goto(f"{url}/jobs/ended-job")
    wait_for_body_data(page, "events", "3".__eq__, WAIT_S)
    box = page.query_selector("#events").evaluate("t => t.closest('.table-wrap').getBoundingClientRect().right")
    assert box <= PHONE_WIDTH   # the events table scrolls in its own box, inside the page


def _page_assets(page: str) -> list[str]:
    """The /static URLs that `page` (HTML) loads."""
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', page)


def test_assets_are_compressed_and_cached_by_version(site):
    """Kind: every page view sent its assets uncompressed with Cache-Control: no-store (124 KB a
    view). Assets are sent gzipped; the pages load them at URLs that carry their content hash,
    cached for a year; the pages and an asset asked for without its hash are revalidated (304)."""
    url, token, _ = site
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/ui/login", json={"token": token}).status_code == 200
        shell = client.get("/jobs/ended-job")
        assert shell.headers["cache-control"] == "private, no-cache" and shell.headers["content-encoding"] == "gzip"
        assert client.get("/jobs/ended-job", headers={"If-None-Match": shell.headers["etag"]}).status_code == 304
        assets = _page_assets(shell.text)
        assert "vendor/uplot/uPlot.iife.min.js" in " ".join(assets) and len(assets) >= 10
        sent = raw = 0
        for asset in assets:
            path, _, version = asset.partition("?v=")
            assert version, f"{asset} has no version"
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert response.headers["cache-control"] == "private, max-age=31536000, immutable", asset
            assert "default-src 'self'" in response.headers["content-security-policy"]
            sent += response.num_bytes_downloaded
            raw += len(response.content)
            if len(response.content) > 4096:
                assert response.headers.get("content-encoding") == "gzip", asset
            unversioned = client.get(path)
            assert unversioned.headers["cache-control"] == "private, no-cache", path
            assert client.get(path, headers={"If-None-Match": unversioned.headers["etag"]}).status_code == 304
            stale = client.get(f"{path}?v=0")
            assert stale.headers["cache-control"] == "private, no-cache" and stale.content == response.content
        assert sent < raw / 2, (sent, raw)
        plain = client.get(assets[0].partition("?v=")[0], headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.status_code == 200
        anonymous = httpx.get(f"{url}/login")
        assert all("?v=" in asset for asset in _page_assets(anonymous.text))
