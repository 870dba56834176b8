"""The dashboard `elastrain server` serves at `/`: login sessions and the pages; the pages read the
REST API (`elastrain.api`) with the session's cookie."""

from elastrain.web.routes import dashboard_router

__all__ = ["dashboard_router"]
