"""The dashboard's routes: the login page and session endpoints (`/ui/...`), the pages, and their
bundled assets (`/static/...`). Nothing but the login page and its own assets answers before login:
a page redirects to it, an asset or session endpoint is 401.

Assets are read once, gzipped once, and sent gzipped to a browser that accepts it. The pages name
each asset with its content hash (`?v=...`): an asset asked for at its current hash is cached for a
year (a new version has a new URL); the pages themselves, and an asset asked for without its hash,
are revalidated (ETag) on every view."""

# No `from __future__ import annotations`: FastAPI must see the real types of the routes' parameters.

import gzip
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
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
}
# Assets and pages are the same for every user, but only a logged-in one may fetch them: no shared cache.
REVALIDATE = "private, no-cache"
IMMUTABLE = "private, max-age=31536000, immutable"
GZIP_MIN_BYTES = 512   # below this, gzip's header outweighs what it saves
STATIC_REFERENCE = re.compile(rb'((?:src|href)=")/static/([^"?#]+)(")')


@dataclass(frozen=True)
class Asset:
    """A file the dashboard serves, as sent: its bytes, gzipped bytes (None when gzip does not pay),
    media type and ETag (from the content hash)."""

    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str

    @classmethod
    def of(cls, name: str, body: bytes) -> "Asset":
        """The asset `name` (its media type comes from its suffix) holding `body`."""
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        packed = gzip.compress(body, compresslevel=9, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
        return cls(body, packed if packed is not None and len(packed) < len(body) else None, media_type,
                   f'"{hashlib.sha256(body).hexdigest()[:20]}"')

    @property
    def version(self) -> str:
        """The content hash the pages put in this asset's URL."""
        return self.etag.strip('"')

    def response(self, request: Request, cache_control: str) -> Response:
        """This asset for `request`: 304 when the browser's copy is current, else gzipped if the
        browser takes gzip."""
        headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": self.etag, "Vary": "Accept-Encoding"}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if self.gzipped is not None and _accepts_gzip(request):
            return Response(self.gzipped, media_type=self.media_type, headers={**headers, "Content-Encoding": "gzip"})
        return Response(self.body, media_type=self.media_type, headers=headers)


def load_assets(root: Path) -> dict[str, Asset]:
    """Every file under `root` by its relative path, the HTML pages' references to `/static/...`
    carrying the referenced asset's version."""
    files = {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}
    assets = {name: Asset.of(name, body) for name, body in files.items() if not name.endswith(".html")}

    def versioned(match: re.Match) -> bytes:
        asset = assets.get(match[2].decode())
        # A reference to a file that is not there is left as it is: it will be a 404, as it should.
        if asset is None:
            return match[0]
        return match[1] + b"/static/" + match[2] + b"?v=" + asset.version.encode() + match[3]

    pages = {name: Asset.of(name, STATIC_REFERENCE.sub(versioned, body))
             for name, body in files.items() if name.endswith(".html")}
    return {**assets, **pages}


def _accepts_gzip(request: Request) -> bool:
    """Whether the request's Accept-Encoding takes gzip (and does not refuse it with q=0)."""
    for part in request.headers.get("accept-encoding", "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


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
    assets = load_assets(STATIC)

    def session_of(request: Request) -> UserInfo:
        user = cookie_user(store, request)
        if user is None:
            raise HTTPException(401, "log in first (at /login)")
        return user

    Session = Annotated[UserInfo, Depends(session_of)]

    @router.get("/login")
    def login_page(request: Request) -> Response:
        return assets["login.html"].response(request, REVALIDATE)

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
    def asset(path: str, request: Request, v: str | None = None) -> Response:
        if path not in PUBLIC_ASSETS:
            session_of(request)
        if path not in assets:
            raise HTTPException(404, f"no asset '{path}'")
        found = assets[path]
        return found.response(request, IMMUTABLE if v == found.version else REVALIDATE)

    def page(request: Request) -> Response:
        if cookie_user(store, request) is None:
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return assets["index.html"].response(request, REVALIDATE)

    for path in PAGES:
        router.add_api_route(path, page, methods=["GET"])
    return router
