"""`elastrain server`: the REST API and the job loop, over the store under ELASTRAIN_HOME."""

from __future__ import annotations

import os

import uvicorn

from elastrain import paths
from elastrain.api.app import create_app
from elastrain.api.service import JobService
from elastrain.scheduler import FifoPacking
from elastrain.store import Store, connect


def serve(host: str = "127.0.0.1", port: int = 8080, db_url: str | None = None) -> None:
    """Run the API and the jobs until interrupted (127.0.0.1 by default: nothing outside this
    machine reaches it). Jobs a previous server left running are resumed from their checkpoints."""
    import ray

    store = Store(connect(db_url))
    if not ray.is_initialized():   # here, in the main thread, not in a job's thread
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    service = JobService(store, paths.home(), FifoPacking(), cpus=ray.cluster_resources().get("CPU", 1.0),
                         artifacts=os.environ.get("ELASTRAIN_ARTIFACTS"))
    service.start()
    try:
        uvicorn.run(create_app(store, home=paths.home()), host=host, port=port, log_level="warning")
    finally:
        service.stop()
