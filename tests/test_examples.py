"""Every example runs, through the front door: real servers, real sample upstreams, real HTTP.

Each script is started the way the docs say (`python examples/<name>.py`, port from PORT); each gateway
builder is also served under uvicorn in front of the example's own sample upstream, and the quickstart
module is served by every ASGI server the docs name.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from asgigate.policies.ratelimit import RateLimitStore
from asgigate.testing import BackgroundServer
from examples import api_gateway_jwt, custom_errors, quickstart, ratelimits, versioning, web_bff

from servers import PYTHON, ROOT, ManualClock, free_port, serve_process

EXAMPLES = ROOT / "examples"


def test_every_example_is_tested() -> None:
    """Each example is imported by some test module (`from examples import name`) and started as a script."""
    imported: set[str] = set()
    started: set[str] = set()
    for module in (ROOT / "tests").glob("test_*.py"):
        text = module.read_text()
        for names in re.findall(r"^from examples import \(?([\w, \n]+)\)?", text, re.MULTILINE):
            imported.update(name.strip() for name in names.replace("\n", ",").split(",") if name.strip())
        started.update(re.findall(r'EXAMPLES / "(\w+)\.py"', text))
    examples = {p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert examples <= imported, examples - imported
    assert examples <= started, examples - started


def problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- quickstart ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users() -> Iterator[BackgroundServer]:
    with BackgroundServer(quickstart.users_app) as server:
        yield server


@pytest.fixture(scope="module")
def quick(users: BackgroundServer) -> Iterator[httpx.Client]:
    with BackgroundServer(quickstart.build_gateway(users.url)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client


def test_quickstart_health_is_direct(quick: httpx.Client) -> None:
    response = quick.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert "x-served-by" not in response.headers  # the route skips the gateway-wide policy
    assert len(response.headers["x-request-id"]) == 24


def test_quickstart_proxies_the_group(quick: httpx.Client) -> None:
    response = quick.get("/api/v1/users", headers={"x-request-id": "client-chosen"})
    assert response.status_code == 200
    body = response.json()
    assert {"id": 1, "name": "Ada"} in body["users"]
    # the upstream saw the gateway's request id (the client's is not trusted), the client gets the same one
    assert body["request_id"] == response.headers["x-request-id"] != "client-chosen"
    assert response.headers["x-served-by"] == "asgigate-quickstart"

    response = quick.get("/api/v1/users/2")
    assert response.json() == {"id": 2, "name": "Grace"}
    response = quick.get("/api/v1/users/999")  # the upstream's own 404 is relayed as it is
    assert response.status_code == 404
    assert response.json() == {"error": "no such user"}


def test_quickstart_policy_stops_writes_without_key(quick: httpx.Client) -> None:
    response = quick.post("/api/v1/users", json={"name": "Linus"})
    body = problem(response, 401, "unauthorized")
    assert body["detail"] == "Writes need a valid x-api-key header."
    assert response.headers["x-served-by"] == "asgigate-quickstart"  # error replies pass the response hooks

    response = quick.post("/api/v1/users", json={"name": "Linus"}, headers={"x-api-key": "demo-key"})
    assert response.status_code == 201
    assert response.json()["name"] == "Linus"
    assert response.headers["x-served-by"] == "asgigate-quickstart"


def test_quickstart_redirect_and_errors(quick: httpx.Client) -> None:
    response = quick.get("/users/2?fields=name")
    assert response.status_code == 308
    assert response.headers["location"] == "/api/v1/users/2?fields=name"

    response = quick.delete("/api/v1/users/1")
    problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"

    response = quick.get("/nowhere")
    problem(response, 404, "no_route")
    assert "x-served-by" not in response.headers  # no route matched, so no policy chain ran

    problem(quick.get("/api/v1/users/abc"), 404, "no_route")  # {id:int} does not match
    problem(quick.get("/api/v1/users/%2e%2e/%2e%2e/%2e%2e/%2e%2e"), 400, "invalid_path")


def test_quickstart_script() -> None:
    """What `./dev demo` runs: the script starts its own upstream, serves on PORT and prints what to curl."""
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "quickstart.py")], port, env={"PORT": str(port)}) as proc:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"ok": True}
        response = httpx.get(f"{base}/api/v1/users/1", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"id": 1, "name": "Ada"}
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    assert f"curl -i http://127.0.0.1:{port}/healthz" in output
    assert "-> Proxy(users, strip_prefix='/api/v1')" in output  # the route table is printed
    assert '"route":"/api/v1/users/{id:int}"' in output  # and the JSON access log


def test_routes_command_on_the_quickstart() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "asgigate", "routes", "examples.quickstart:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Quickstart\n")
    assert (
        "GET POST /api/v1/users  [/api/v1/users]\n"
        "  1. ServedBy(name='asgigate-quickstart')  (gateway)\n"
        "  2. ApiKeyForWrites(key='demo-key')  (group)\n"
        "  -> Proxy(users, strip_prefix='/api/v1')\n"
    ) in result.stdout


SERVERS = {
    "uvicorn": lambda port: [PYTHON, "-m", "uvicorn", "examples.quickstart:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
    "hypercorn": lambda port: [PYTHON, "-m", "hypercorn", "examples.quickstart:app", "--bind",
                               f"127.0.0.1:{port}"],
    "granian": lambda port: [PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                             "--port", str(port), "examples.quickstart:app"],
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_quickstart_under_each_server(server: str, users: BackgroundServer) -> None:
    """The commands of docs/getting-started.md, against the sample upstream."""
    port = free_port()
    with serve_process(SERVERS[server](port), port, env={"USERS_URL": users.url}, timeout=30):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"ok": True}
        response = httpx.get(f"{base}/api/v1/users/1", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"id": 1, "name": "Ada"}
        assert response.headers["x-served-by"] == "asgigate-quickstart"


# --- versioning ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def versioned() -> Iterator[httpx.Client]:
    with BackgroundServer(versioning.orders_service(1)) as v1, BackgroundServer(versioning.orders_service(2)) as v2:
        with BackgroundServer(versioning.build_gateway(v1.url, v2.url)) as gateway:
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                yield client


V1_ORDER = {"id": 1, "total": "12.50"}
V2_ORDER = {"id": 1, "total": {"amount": 1250, "currency": "EUR"}, "api_version": 2}


def test_versioning_by_path(versioned: httpx.Client) -> None:
    assert versioned.get("/v1/orders/1").json() == V1_ORDER
    assert versioned.get("/v2/orders/1").json() == V2_ORDER
    listing = versioned.get("/v2/orders").json()
    assert listing["path"] == "/orders"  # the version prefix is stripped before forwarding
    assert len(listing["orders"]) == 2


def test_versioning_by_header(versioned: httpx.Client) -> None:
    assert versioned.get("/orders/1").json() == V1_ORDER
    assert versioned.get("/orders/1", headers={"X-API-Version": "1"}).json() == V1_ORDER
    assert versioned.get("/orders/1", headers={"X-API-Version": "2"}).json() == V2_ORDER
    assert versioned.get("/orders", headers={"x-api-version": "2"}).json()["orders"][0] == V2_ORDER


def test_versioning_unknown_version(versioned: httpx.Client) -> None:
    for path in ("/orders/1", "/orders"):
        body = problem(versioned.get(path, headers={"X-API-Version": "3"}), 400, "bad_request")
        assert body["detail"] == "Unsupported API version '3'; use 1 or 2."
    problem(versioned.get("/v3/orders/1"), 404, "no_route")
    problem(versioned.post("/v1/orders"), 405, "method_not_allowed")


def test_versioning_script() -> None:
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "versioning.py")], port, env={"PORT": str(port)}, timeout=30):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/orders/1", headers={"X-API-Version": "2"}, timeout=10).json() == V2_ORDER
        assert httpx.get(f"{base}/v1/orders/1", timeout=10).json() == V1_ORDER


# --- custom error replies ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop() -> Iterator[httpx.Client]:
    with BackgroundServer(custom_errors.catalog_app) as catalog:
        with BackgroundServer(custom_errors.build_gateway(catalog.url)) as gateway:
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                yield client


def envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, object] = response.json()["error"]
    assert (error["status"], error["code"]) == (status, code)
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["docs"] == f"https://docs.example.com/errors#{code}"
    return error


def test_custom_errors_one_envelope(shop: httpx.Client) -> None:
    assert envelope(shop.get("/nowhere"), 404, "no_route")["message"] == "There is nothing at /nowhere."
    refused = shop.get("/api/v2/orders")
    assert envelope(refused, 401, "unauthorized")["message"] == "A valid x-api-key header is required."
    assert refused.headers["www-authenticate"] == 'ApiKey realm="shop"'
    retired = envelope(shop.get("/api/v1/products/1"), 410, "request_terminated")
    assert retired["message"] == "API v1 was retired; use /api/v2."
    assert shop.get("/admin/maintenance").headers["allow"] == "POST"
    envelope(shop.get("/admin/maintenance"), 405, "method_not_allowed")
    assert shop.get("/api/v2/orders", headers={"x-api-key": "admin-key"}).json() == []


def test_custom_errors_hide_upstream_failures(shop: httpx.Client) -> None:
    replaced = shop.get("/api/v2/products/500")
    error = envelope(replaced, 500, "upstream_error_response")
    assert error["message"].startswith("Something went wrong on our side.")  # type: ignore[union-attr]
    assert "hunter2" not in replaced.text and "Traceback" not in replaced.text
    relayed = shop.get("/api/v2/products/9")  # the catalogue's 404 is the API's own answer: relayed
    assert (relayed.status_code, relayed.json()) == (404, {"error": "no such product"})
    assert shop.get("/api/v2/products/1").json() == {"id": 1, "name": "Green tea"}
    legacy = shop.get("/mobile/v1/products/500")
    assert (legacy.status_code, legacy.json()) == (500, {"ok": False, "err": "UPSTREAM_ERROR_RESPONSE"})


def test_custom_errors_html_page_for_browsers(shop: httpx.Client) -> None:
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = shop.get("/nowhere<b>", headers={"accept": browser})
    assert page.status_code == 404
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>404 Not Found - Example Shop</title>" in page.text
    assert "There is nothing at /nowhere&lt;b&gt;." in page.text
    assert f"request {page.headers['x-request-id']}" in page.text


def test_custom_errors_maintenance_switch(shop: httpx.Client) -> None:
    admin = {"x-api-key": "admin-key"}
    assert shop.post("/admin/maintenance?on=1", headers=admin).json() == {"maintenance": True}
    try:
        down = shop.get("/api/v2/products/1")
        error = envelope(down, 503, "request_terminated")
        assert (error["retry_after"], down.headers["retry-after"]) == (600, "600")
        assert error["message"] == "The shop is down for maintenance."
        assert shop.get("/healthz").json() == {"ok": True}
    finally:
        assert shop.post("/admin/maintenance?on=0", headers=admin).json() == {"maintenance": False}
    assert shop.get("/api/v2/products/1").status_code == 200


def test_custom_errors_mock_reviews(shop: httpx.Client) -> None:
    reviews = shop.get("/api/v2/reviews/1").json()
    assert reviews == {"product": 1, "reviews": [{"stars": 5, "text": "Lovely."}]}
    empty = shop.get("/api/v2/reviews/2", headers={"prefer": "example=empty"})
    assert empty.json() == {"product": 2, "reviews": []}


def test_custom_errors_script() -> None:
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "custom_errors.py")], port, env={"PORT": str(port)}, timeout=30):
        base = f"http://127.0.0.1:{port}"
        response = httpx.get(f"{base}/api/v2/products/500", timeout=10)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "upstream_error_response"
        assert httpx.get(f"{base}/api/v2/products/2", timeout=10).json() == {"id": 2, "name": "Black tea"}


# --- API gateway with JWT ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_api() -> Iterator[httpx.Client]:
    with BackgroundServer(api_gateway_jwt.orders_app) as orders:
        with BackgroundServer(api_gateway_jwt.build_gateway(orders.url)) as gateway:
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                yield client


def test_api_gateway_jwt_refuses_without_credentials(jwt_api: httpx.Client) -> None:
    response = jwt_api.get("/api/orders")
    problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer, ApiKey header="x-api-key"'
    response = jwt_api.get("/api/orders", headers={"authorization": "Bearer e30.e30.e30"})
    problem(response, 401, "invalid_token")
    assert jwt_api.get("/healthz").json() == {"ok": True}


def test_api_gateway_jwt_tokens_scopes_and_roles(jwt_api: httpx.Client) -> None:
    reader = {"authorization": "Bearer " + api_gateway_jwt.demo_token("alice", "orders:read")}
    listing = jwt_api.get("/api/orders", headers={**reader, "x-user-id": "mallory"})
    assert listing.status_code == 200, listing.text
    assert listing.json()["caller"] == "alice"  # the gateway's header, not the client's
    assert listing.json()["scopes"] == "orders:read"
    problem(jwt_api.post("/api/orders", json={"total": 990}, headers=reader), 403, "insufficient_scope")
    problem(jwt_api.get("/api/admin/stats", headers=reader), 403, "insufficient_scope")
    writer = {"authorization": "Bearer " + api_gateway_jwt.demo_token("bob", "orders:write", roles=["admin"])}
    created = jwt_api.post("/api/orders", json={"total": 990}, headers=writer)
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == "bob"
    assert jwt_api.get("/api/admin/stats", headers=writer).json()["caller"] == "bob"
    expired = {"authorization": "Bearer " + api_gateway_jwt.demo_token("alice", "orders:read", ttl=-3600)}
    problem(jwt_api.get("/api/orders", headers=expired), 401, "expired_token")


def test_api_gateway_jwt_api_key(jwt_api: httpx.Client) -> None:
    response = jwt_api.get("/api/orders", headers={"x-api-key": "rk_demo_4f1d9a7c2b8e6d3a"})
    assert response.status_code == 200, response.text
    assert (response.json()["consumer"], response.json()["caller"]) == ("reporting", "reporting")
    problem(jwt_api.post("/api/orders", json={}, headers={"x-api-key": "rk_demo_4f1d9a7c2b8e6d3a"}), 403,
            "insufficient_scope")
    problem(jwt_api.get("/api/orders", headers={"x-api-key": "rk_guess"}), 401, "unauthorized")


def test_api_gateway_jwt_script() -> None:
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "api_gateway_jwt.py")], port, env={"PORT": str(port)},
                       timeout=30) as proc:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"ok": True}
        assert httpx.get(f"{base}/api/orders", timeout=10).status_code == 401
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    token = output.split("Authorization: Bearer ", 1)[1].split("'", 1)[0]
    assert token.count(".") == 2
    assert f"curl -i {base}/api/orders -H 'x-api-key: rk_demo_4f1d9a7c2b8e6d3a'" in output


# --- rate limits and plans -----------------------------------------------------------------------------------


def test_ratelimits_plans_and_quotas() -> None:
    # the gateway's counters on a clock the test moves: noon UTC, so the daily quota does not turn over meanwhile
    clock = ManualClock(start=time.time() // 86400 * 86400 + 43200)
    with BackgroundServer(ratelimits.catalog_app) as catalog, \
            BackgroundServer(ratelimits.PublicAPI(catalog.url, RateLimitStore(clock=clock))) as gw:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            assert "ratelimit" not in client.get("/healthz").headers  # the route skips every RateLimit
            problem(client.get("/api/products"), 401, "unauthorized")
            free = {"x-api-key": "free-key"}
            first = client.get("/api/products", headers=free)
            assert first.status_code == 200
            assert first.headers["ratelimit-policy"] == '"2-per-second";q=2;w=1, "5-per-day";q=5;w=86400'
            statuses = [first.status_code]
            for _ in range(5):
                clock.advance(0.6)  # under the free rate of 2/second: the daily quota is what stops it
                statuses.append(client.get("/api/products", headers=free).status_code)
            assert statuses == [200] * 5 + [429]
            clock.advance(0.6)
            refused = client.get("/api/products", headers=free)
            body = problem(refused, 429, "quota_exceeded")
            assert body["title"] == "Quota Exceeded"
            to_midnight = 86400 - clock() % 86400  # the daily quota is a UTC calendar day
            assert abs(int(refused.headers["retry-after"]) - to_midnight) <= 2
            pro = {"x-api-key": "pro-key"}
            assert [client.get("/api/products", headers=pro).status_code for _ in range(12)].count(429) >= 1
            clock.advance(1.1)  # the pro rate (10/second) is over; its quota is not
            assert client.get("/api/products", headers=pro).status_code == 200


def test_ratelimits_script() -> None:
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "ratelimits.py")], port, env={"PORT": str(port)}, timeout=30):
        response = httpx.get(f"http://127.0.0.1:{port}/api/products", headers={"x-api-key": "pro-key"}, timeout=10)
        assert response.status_code == 200
        assert response.json()["products"][0]["name"] == "Teapot"
        assert response.headers["x-ratelimit-limit"] == "10"


# --- web BFF with browser login (the full browser flow is in test_auth_login_browser.py) -----------------------


def test_web_bff_script_with_a_real_provider() -> None:
    """The script against the real OpenID provider: pages send browsers to the login, API calls get 401."""
    from idp.provider import openid_provider

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with openid_provider(rp_url=base) as idp:
        env = {"PORT": str(port), "OIDC_ISSUER": idp.url, "OIDC_CLIENT_ID": "web-client",
               "OIDC_CLIENT_SECRET": "web-secret", "SESSION_SECRET": "example-session-secret-0123456789ab",
               "OIDC_SCOPE": "openid orders:read"}
        with serve_process([PYTHON, str(EXAMPLES / "web_bff.py")], port, env=env, timeout=30), \
                httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/healthz").json() == {"ok": True}
            page = client.get("/", headers={"accept": "text/html"})
            assert (page.status_code, page.headers["location"]) == (302, "/auth/login?return_to=%2F")
            api = client.get("/api/me", headers={"accept": "text/html"})  # api_paths: never a redirect
            assert api.status_code == 401
            assert api.headers["www-authenticate"] == 'Session login="/auth/login"'
            problem(client.get("/api/me", headers={"accept": "application/json"}), 401, "unauthorized")
            login = client.get("/auth/login?return_to=/")
            assert login.status_code == 302
            location = httpx.URL(login.headers["location"])
            assert str(location).startswith(f"{idp.url}/auth?")
            assert location.params["code_challenge_method"] == "S256"
            assert location.params["redirect_uri"] == f"{base}/auth/callback"
            assert "asgigate_session_login" in login.cookies
            # The provider accepts the request (client and redirect URI registered) and shows its login page.
            shown = httpx.get(str(location), timeout=10, follow_redirects=True)
            assert shown.status_code == 200
            assert 'name="login"' in shown.text
        with serve_process([PYTHON, str(EXAMPLES / "web_bff.py")], port, env=env, timeout=30), \
                httpx.Client(base_url=base, timeout=10) as browser:
            # Signed in (the provider's login form, without a browser), the page's API call gets the user's data.
            assert idp.sign_in(browser, f"{base}/auth/login?return_to=/", "erin").headers["location"] == "/"
            me = browser.get("/api/me", headers={"accept": "application/json"})
            assert me.json() == {"user": "erin", "orders": [{"id": 1, "total": 1250}]}


def test_web_bff_gateway_builds() -> None:
    gateway = web_bff.build_gateway("http://127.0.0.1:9", env={
        "OIDC_ISSUER": "https://login.example.com", "OIDC_CLIENT_ID": "web", "OIDC_CLIENT_SECRET": "s",
        "SESSION_SECRET": "example-session-secret-0123456789ab"})
    described = gateway.describe()
    assert "SessionAuth" in described and "TokenRelay" in described
    assert type(gateway.login.store).__name__ == "CookieSessions"
    shared = web_bff.build_gateway("http://127.0.0.1:9", env={
        "OIDC_ISSUER": "https://login.example.com", "OIDC_CLIENT_ID": "web", "OIDC_CLIENT_SECRET": "s",
        "SESSION_SECRET": "example-session-secret-0123456789ab", "REDIS_URL": "redis://127.0.0.1:6379/2"})
    assert repr(shared.login.store) == "RedisSessions('redis://127.0.0.1:6379/2', prefix='asgigate:session:')"
