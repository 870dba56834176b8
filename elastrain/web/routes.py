"""The dashboard's routes: the login page and session endpoints (`/ui/...`), the pages, and their
bundled assets (`/static/...`). Nothing but the login page and its own assets answers before login:
a page redirects to it, an asset or session endpoint is 401."""

# No `from __future__ import annotations`: FastAPI must see the real types of the routes' parameters.

import mimetypes
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from elastrain.store import Store, UserInfo
from elastrain.store.web_sessions import SESSION_LIFETIME, close_session, open_session
from elastrain.web.auth import COOKIE, cookie_user, csrf_token

STATIC = Path(__file__).parent / "static"
PUBLIC_ASSETS = frozenset({"login.css", "login.js"})
# The paths of the pages; each is the same shell (index.html), which draws the page its path names.
PAGES = ("/", "/jobs/{job_id}", "/cluster", "/models", "/studies", "/studies/{name}", "/simulations")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Login(BaseModel):
    """A login: an API token, as `elastrain admin create-user` printed it."""

    token: str = Field(min_length=1, max_length=200)


class SessionOut(BaseModel):
    """Who is logged in, and the CSRF token to send as X-CSRF-Token with each change."""

    user: str
    admin: bool
    csrf: str


def dashboard_router(store: Store) -> APIRouter:
    """The dashboard over `store`."""
    router = APIRouter(include_in_schema=False)
    assets = {str(path.relative_to(STATIC)): path for path in STATIC.rglob("*") if path.is_file()}

    def session_of(request: Request) -> UserInfo:
        user = cookie_user(store, request)
        if user is None:
            raise HTTPException(401, "log in first (at /login)")
        return user

    Session = Annotated[UserInfo, Depends(session_of)]

    @router.get("/login")
    def login_page() -> Response:
        return _file(STATIC / "login.html")

    @router.post("/ui/login")
    def login(request: Request, body: Annotated[Login, Body()]) -> Response:
        opened = open_session(store, body.token.strip())
        if opened is None:
            raise HTTPException(401, "unknown or revoked token")
        value, user = opened
        response = Response(SessionOut(user=user.name, admin=user.is_admin, csrf=csrf_token(value))
                            .model_dump_json(), media_type="application/json")
        response.set_cookie(COOKIE, value, max_age=int(SESSION_LIFETIME.total_seconds()), path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @router.post("/ui/logout", status_code=204)
    def logout(request: Request, _: Session) -> Response:
        close_session(store, request.cookies[COOKIE])
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/ui/session", response_model=SessionOut)
    def session(request: Request, user: Session) -> SessionOut:
        return SessionOut(user=user.name, admin=user.is_admin, csrf=csrf_token(request.cookies[COOKIE]))

    @router.get("/static/{path:path}")
    def asset(path: str, request: Request) -> Response:
        if path not in PUBLIC_ASSETS:
            session_of(request)
        if path not in assets:
            raise HTTPException(404, f"no asset '{path}'")
        return _file(assets[path])

    def page(request: Request) -> Response:
        if cookie_user(store, request) is None:
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return _file(STATIC / "index.html")

    for path in PAGES:
        router.add_api_route(path, page, methods=["GET"])
    return router


def _file(path: Path) -> FileResponse:
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)
