"""`elastrain server`: the REST API on a local address, over the store under ELASTRAIN_HOME."""

from __future__ import annotations

import uvicorn

from elastrain.api.app import create_app
from elastrain.store import Store, connect


def serve(host: str = "127.0.0.1", port: int = 8080, db_url: str | None = None) -> None:
    """Run the API until interrupted (127.0.0.1 by default: nothing outside this machine reaches it)."""
    store = Store(connect(db_url))
    uvicorn.run(create_app(store), host=host, port=port, log_level="warning")
