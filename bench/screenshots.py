"""The README's screenshots of the dashboard, from real work: a server on an embedded Ray runs the
demo job (resized from 3 to 1 and back to 2 workers through the API while it trains), a few small
jobs and a hyperparameter study whose trials are jobs of the server; a simulation of a Pollux
workload gives the simulator page its summary.json. Each page is then saved as a PNG.

Usage: python -m bench.screenshots [--out docs/img]   (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.dashboard import browser_page
from elastrain.spec.load import read_yaml

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "traces" / "pollux"
PAGES = {"jobs": "/", "cluster": "/cluster", "models": "/models", "studies": "/studies"}


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench.screenshots] {message}", file=sys.stderr, flush=True)


def wait_for(url: str, token: str, job_id: str, predicate, timeout_s: float = 600) -> dict:
    """The job once `predicate(job)` holds (polled through the API)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}).json()
        if predicate(job):
            return job
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not get there in {timeout_s} s")


def run_work(url: str, token: str, db_url: str, home: Path) -> str:
    """Submit and drive the jobs and the study; the demo job's id."""
    auth = {"Authorization": f"Bearer {token}"}
    demo = read_yaml((REPO / "examples" / "demo.yaml").read_bytes(), "demo.yaml")[0]
    demo["train"]["epochs"] = 300   # about a minute: long enough to see each resize on the charts
    demo_id = httpx.post(f"{url}/api/v1/jobs", json=demo, headers=auth).json()["job_id"]
    progress(f"demo job {demo_id} submitted")
    wait_for(url, token, demo_id, lambda j: j["status"] == "running" and j["workers"] == 3)
    for workers in (1, 2):
        time.sleep(8)
        httpx.post(f"{url}/api/v1/jobs/{demo_id}/scale", json={"workers": workers}, headers=auth)
        wait_for(url, token, demo_id, lambda j, n=workers: j["workers"] == n or j["status"] != "running")
    wait_for(url, token, demo_id, lambda j: j["status"] in ("succeeded", "failed"))
    httpx.put(f"{url}/api/v1/models/{demo['name']}/aliases/production", json={"version": 1}, headers=auth)
    for example in ("svm_iris.yaml", "softmax_wine.yaml", "linear_diabetes.yaml"):
        spec = read_yaml((REPO / "examples" / example).read_bytes(), example)[0]
        job_id = httpx.post(f"{url}/api/v1/jobs", json=spec, headers=auth).json()["job_id"]
        wait_for(url, token, job_id, lambda j: j["status"] in ("succeeded", "failed"))
    progress("running a study of 6 trials on the server")
    from elastrain.tune.study import Study

    spec = read_yaml((REPO / "examples" / "tune_mlp_digits.yaml").read_bytes(), "tune")[0]
    spec["train"]["epochs"] = 6
    spec["tune"].update(n_trials=6, budget={"wall_s": 600})
    Study(spec, name="tune-digits-mlp", storage=db_url, home=home, server=url, token=token).optimize()
    return demo_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder of the PNGs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    from elastrain.api import create_app
    from elastrain.api.server import serving_in_thread
    from elastrain.api.service import JobService
    from elastrain.cli.main import main as cli
    from elastrain.elastic import connect_ray
    from elastrain.scheduler import FifoPacking
    from elastrain.store import Store, connect

    with tempfile.TemporaryDirectory(prefix="elastrain-screenshots-") as folder:
        home = Path(folder)
        os.environ["ELASTRAIN_HOME"] = str(home)
        db_url = f"sqlite:///{home / 'server.db'}"
        store = Store(connect(db_url))
        _, token = store.create_user("ada", admin=True)
        connect_ray(None)
        service = JobService(store, home, FifoPacking(), cpus=2, cpu_hour_price=0.05)   # as --cpu-hour-price 0.05
        service.start()
        simulated = home / "sim"
        try:
            cli(["simulate", "--workload", str(TRACES / "workloads" / "workload-1.csv"), "--apps",
                 str(TRACES / "traces"), "--policy", "fifo,tiresias,goodput", "--out", str(simulated)])
        except SystemExit as exc:
            if exc.code:
                raise
        with serving_in_thread(create_app(store, home=home)) as url:
            demo_id = run_work(url, token, db_url, home)
            with sync_playwright() as playwright:
                page = browser_page(playwright, url, token)
                shots = {**PAGES, "job": f"/jobs/{demo_id}", "study": "/studies/tune-digits-mlp"}
                for name, path in shots.items():
                    page.goto(f"{url}{path}")
                    page.wait_for_load_state("networkidle")
                    time.sleep(1.0)   # the charts draw after their data arrive
                    page.screenshot(path=args.out / f"dashboard-{name}.png", full_page=True)
                    progress(f"saved dashboard-{name}.png")
                page.goto(f"{url}/simulations")
                page.set_input_files("#summary-file", simulated / "summary.json")
                page.wait_for_selector("#sim-summary tr td")
                time.sleep(1.0)
                page.screenshot(path=args.out / "dashboard-simulations.png", full_page=True)
                page.context.clear_cookies()
                page.goto(f"{url}/")
                page.screenshot(path=args.out / "dashboard-login.png")
        service.stop()


if __name__ == "__main__":
    main()
