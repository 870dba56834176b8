"""The dashboard's doors, over real HTTP on 127.0.0.1 and a real SQLite store: nothing answers before
login, the session cookie's flags, CSRF on every change, sessions ending with their token, and bad
input that gets a 4xx, never a 5xx. (The pages themselves are driven in a browser by
test_dashboard_browser.py.)"""

from contextlib import closing

import httpx
import pytest

from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.store import Store, connect
from elastrain.web.auth import COOKIE, CSRF_HEADER
from elastrain.web.routes import PUBLIC_ASSETS, STATIC, dashboard_router

SPEC = {"name": "dash-job", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"}}
PUBLIC = {"/login", "/ui/login", "/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/oauth2-redirect"}


@pytest.fixture
def site(tmp_path):
    """The server's app on a real port: its URL, the app, the store and the tokens of ada and root
    (admin)."""
    store = Store(connect(f"sqlite:///{tmp_path / 'dash.db'}"))
    tokens = {name: store.create_user(name, admin=name == "root")[1] for name in ("ada", "root")}
    app = create_app(store, home=tmp_path)
    with serving_in_thread(app) as url:
        yield url, app, store, tokens


def login(url: str, token: str) -> tuple[httpx.Client, str]:
    """A client holding a session of `token`'s user, and the session's CSRF token."""
    client = httpx.Client(base_url=url, timeout=30)
    response = client.post("/ui/login", json={"token": token})
    assert response.status_code == 200, response.text
    return client, response.json()["csrf"]


def every_route(app, store) -> list[tuple[str, str]]:
    """(method, path) of every route of the server: the API's from its OpenAPI document, the
    dashboard's from its router."""
    routes = [(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item]
    routes += [(method, route.path) for route in dashboard_router(store).routes for method in route.methods]
    return [(method, path) for method, path in routes if method != "HEAD" and path not in PUBLIC]


def test_no_page_asset_or_endpoint_answers_before_login(site):
    url, app, store, _ = site
    routes = every_route(app, store)
    assert {("GET", "/jobs/{job_id}"), ("GET", "/api/v1/cluster"), ("GET", "/static/{path:path}"),
            ("POST", "/api/v1/jobs/{job_id}/scale"), ("POST", "/ui/logout")} <= set(routes)
    assets = [str(p.relative_to(STATIC)) for p in STATIC.rglob("*") if p.is_file()]
    assert "vendor/uplot/uPlot.iife.min.js" in assets
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        for method, path in routes:
            concrete = path.replace("{path:path}", "main.js").replace("{", "").replace("}", "")
            response = anonymous.request(method, concrete)
            if path.startswith(("/api/", "/ui/", "/static/")):
                assert response.status_code == 401, (method, concrete, response.status_code)
            else:   # a page sends the browser to the login page, and shows nothing
                assert response.status_code == 303, (method, concrete)
                assert response.headers["location"] == f"/login?next={concrete}"
        for asset in assets:
            expected = 200 if asset in PUBLIC_ASSETS else 401
            assert anonymous.get(f"/static/{asset}").status_code == expected, asset
        assert anonymous.get("/login").status_code == 200
        assert "<form" in anonymous.get("/login").text


def test_a_session_cookie_is_httponly_and_strict_and_opens_the_pages(site):
    url, _, _, tokens = site
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/ui/login", json={"token": "et_wrong"}).status_code == 401
        response = client.post("/ui/login", json={"token": tokens["ada"]})
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie   # plain HTTP here; under TLS the cookie is Secure
        assert response.json()["user"] == "ada" and response.json()["admin"] is False
        page = client.get("/jobs/any-job")
        assert page.status_code == 200 and "main.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
        assert client.get("/api/v1/jobs").json()["total"] == 0
        assert client.get("/static/../routes.py").status_code == 404


def test_every_change_by_cookie_needs_the_sessions_csrf_token(site):
    url, _, _, tokens = site
    client, csrf = login(url, tokens["ada"])
    with closing(client):
        assert client.post("/api/v1/jobs", json=SPEC).status_code == 403
        assert client.post("/api/v1/jobs", json=SPEC, headers={CSRF_HEADER: "0" * 64}).status_code == 403
        job = client.post("/api/v1/jobs", json=SPEC, headers={CSRF_HEADER: csrf})
        assert job.status_code == 201
        job_id = job.json()["job_id"]
        for path, body in ((f"/api/v1/jobs/{job_id}/scale", {"workers": 1}), (f"/api/v1/jobs/{job_id}/cancel", None)):
            assert client.post(path, json=body).status_code == 403
            assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"   # nothing changed
        assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers={CSRF_HEADER: csrf}).status_code == 202
        assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert client.post("/ui/logout").status_code == 403
        assert client.post("/ui/logout", headers={CSRF_HEADER: csrf}).status_code == 204
        assert client.get("/ui/session").status_code == 401


def test_a_session_ends_with_its_token_and_sees_only_its_users_jobs(site):
    url, _, store, tokens = site
    ada, ada_csrf = login(url, tokens["ada"])
    root, _ = login(url, tokens["root"])
    with closing(ada), closing(root):
        job_id = ada.post("/api/v1/jobs", json=SPEC, headers={CSRF_HEADER: ada_csrf}).json()["job_id"]
        assert root.get(f"/api/v1/jobs/{job_id}").status_code == 200   # an admin sees all
        bob, _ = login(url, store.create_user("bob")[1])
        with closing(bob):
            assert bob.get(f"/api/v1/jobs/{job_id}").status_code == 404
            assert bob.get("/api/v1/jobs").json()["total"] == 0
        assert store.revoke_token(tokens["ada"][:12])
        assert ada.get("/ui/session").status_code == 401
        assert ada.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(("body", "headers"), [
    (b"not json", {"content-type": "application/json"}),
    (b'{"token": 5}', {"content-type": "application/json"}),
    (b'{"token": "' + b"x" * 5000 + b'"}', {"content-type": "application/json"}),
    (b"[" * 10_000, {"content-type": "application/json"}),
    (b"token=abc", {"content-type": "application/x-www-form-urlencoded"}),
    (b"", {}),
])
def test_bad_login_input_is_a_4xx(site, body, headers):
    url, _, _, _ = site
    response = httpx.post(f"{url}/ui/login", content=body, headers=headers, timeout=30)
    assert 400 <= response.status_code < 500, response.status_code


def test_bad_dashboard_queries_are_4xx(site):
    url, _, _, tokens = site
    client, _ = login(url, tokens["ada"])
    with closing(client):
        for path in ("/api/v1/jobs?sort=drop", "/api/v1/jobs?limit=0", "/api/v1/jobs?offset=-1",
                     "/api/v1/jobs?offset=99999999999999999999999", "/api/v1/jobs?q=" + "x" * 300,
                     "/api/v1/cluster?limit=0", "/api/v1/studies/none", "/api/v1/jobs/none/events",
                     "/static/nothing.js"):
            response = client.get(path)
            assert 400 <= response.status_code < 500, (path, response.status_code)
        client.cookies.set(COOKIE, "x" * 5000)
        assert client.get("/ui/session").status_code == 401
