"""Serving a registered model over HTTP: `elastrain serve`."""
