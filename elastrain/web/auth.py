"""How a dashboard request proves who sent it: the session cookie, and for a request that changes
state, a CSRF token the page read from `/ui/session` (a page of another site cannot read it, and
the cookie is SameSite=Strict besides)."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

from elastrain.store import Store, UserInfo
from elastrain.store.web_sessions import session_user

COOKIE = "elastrain_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_value: str) -> str:
    """The CSRF token of the session named by the cookie `session_value` (derived from it, so
    nothing more is stored)."""
    return hmac.new(session_value.encode(), b"elastrain-csrf", hashlib.sha256).hexdigest()


def cookie_user(store: Store, request: Request) -> UserInfo | None:
    """The user of the request's live session cookie, or None without one.

    Raises:
        HTTPException: 403 when the request changes state without the session's CSRF token.
    """
    value = request.cookies.get(COOKIE)
    if not value or len(value) > 128:
        return None
    user = session_user(store, value)
    if user is not None and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(value).encode()):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header: reload the page and try again")
    return user
