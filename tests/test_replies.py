"""Error replies: templates, functions, the cascade route → group → gateway, negotiation, protocol headers.

Everything goes through a real server; the selector order, the Accept parsing and the templates are also
checked directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.responses import PlainTextResponse, Response

from asgigate import (
    ClientError,
    ConfigurationError,
    Direct,
    ErrorReplies,
    Exchange,
    FaultInjection,
    Forbidden,
    Gateway,
    GatewayError,
    Group,
    InsufficientScope,
    InterceptErrors,
    InvalidToken,
    Mock,
    NotFound,
    Policy,
    Proxy,
    RateLimited,
    Reply,
    Route,
    Terminate,
    Unauthorized,
    Upstream,
)
from asgigate._accept import negotiate
from asgigate._templates import JSONTemplate, TemplateError, TextTemplate
from asgigate.testing import BackgroundServer

from servers import free_port, raw_get

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
ENVELOPE = {
    "error": {
        "code": "{code}",
        "status": "{status}",
        "message": "{message}",
        "request_id": "{request_id}",
        "route": "{route}",
        "retry_after": "{retry_after}",
    }
}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(record.getMessage()))

    def wait_for(self, request_ids: list[str]) -> list[dict[str, Any]]:
        """The lines of these requests, in this order (lines of earlier requests may still arrive)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = {line["request_id"]: line for line in self.lines}
            if all(i in found for i in request_ids):
                return [found[i] for i in request_ids]
            time.sleep(0.01)
        raise AssertionError(f"no access log line for some of {request_ids}")


@pytest.fixture
def access_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("asgigate.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


class Raise(Policy):
    """Raises the error it was given (a fresh copy per request)."""

    def __init__(self, make: Any) -> None:
        self.make = make

    async def on_request(self, exchange: Exchange) -> Response | None:
        raise self.make()


def throttled() -> RateLimited:
    return RateLimited(
        "Slow down.", retry_after=7,
        headers={"ratelimit-limit": "10", "ratelimit-remaining": "0", "ratelimit-reset": "7"},
    )


async def crash(exchange: Exchange) -> Response:
    raise RuntimeError("secret-internal-state")


# --- one place: every reply the gateway makes follows one JSON shape ------------------------------------------


class Everything(Gateway):
    """Every source of a gateway-made error reply, with one `errors=` setting for all of them."""

    def __init__(self, upstream_url: str, dead_url: str, **kwargs: Any) -> None:
        super().__init__(errors=Reply(json=ENVELOPE, headers={"x-error-code": "{code}"}), max_body_size=16, **kwargs)
        self.up = Upstream(upstream_url, name="up", timeout=1.0)  # /slow?delay=2 times out; a busy machine does not
        self.dead = Upstream(dead_url, name="dead")

    def routes(self) -> list[Route | Group]:
        return [
            Route("/auth", Direct(text="x"), policies=[Raise(lambda: InvalidToken("The token expired."))]),
            Route("/throttled", Direct(text="x"), policies=[Raise(throttled)]),
            Route("/crash", crash),
            Route("/post-only", Direct(text="x"), methods=["POST"]),
            Route("/slow", Proxy(self.up, path="/slow")),
            Route("/dead", Proxy(self.dead)),
            Route("/upload", Proxy(self.up, path="/echo")),
            Route("/upstream-500",
                  Proxy(self.up, path="/status/500", intercept_errors=InterceptErrors(replace=["5xx"]))),
            Route("/maintenance", Direct(text="x"), policies=[Terminate(503, "Back soon.", retry_after=120)]),
            Route("/fault", Direct(text="x"), policies=[FaultInjection(abort_percent=100, abort_status=502)]),
            Route("/mock", Mock(examples={"one": {"id": 1}})),
        ]


@pytest.fixture(scope="module")
def everything(upstream: BackgroundServer) -> Iterator[BackgroundServer]:
    with BackgroundServer(Everything(upstream.url, f"http://127.0.0.1:{free_port()}")) as server:
        yield server


CASES = [
    ("GET", "/auth", {}, None, 401, "invalid_token"),
    ("GET", "/throttled", {}, None, 429, "rate_limited"),
    ("GET", "/crash", {}, None, 500, "internal_error"),
    ("GET", "/post-only", {}, None, 405, "method_not_allowed"),
    ("GET", "/nowhere", {}, None, 404, "no_route"),
    ("GET", "/slow?delay=2", {}, None, 504, "upstream_timeout"),
    ("GET", "/dead", {}, None, 502, "upstream_connect_failed"),
    ("POST", "/upload", {}, b"x" * 100, 413, "payload_too_large"),
    ("GET", "/upstream-500", {}, None, 500, "upstream_error_response"),
    ("GET", "/maintenance", {}, None, 503, "request_terminated"),
    ("GET", "/fault", {}, None, 502, "fault_injected"),
    ("GET", "/mock", {"prefer": "example=nope"}, None, 400, "bad_request"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), CASES, ids=[c[1] for c in CASES])
def test_one_setting_shapes_every_gateway_reply(
    everything: BackgroundServer, method: str, path: str, headers: dict[str, str], body: bytes | None, status: int,
    code: str,
) -> None:
    response = httpx.request(method, everything.url + path, headers=headers, content=body, timeout=10)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-error-code"] == code
    payload = response.json()
    assert list(payload) == ["error"]
    error = payload["error"]
    assert set(error) == {"code", "status", "message", "request_id", "route", "retry_after"}
    assert (error["code"], error["status"]) == (code, status)  # "{status}" keeps its type: a number
    assert error["request_id"] == response.headers["x-request-id"]
    assert isinstance(error["message"], str) and error["message"]
    assert "secret-internal-state" not in response.text


def test_one_setting_shapes_refused_paths(everything: BackgroundServer) -> None:
    status, raw = raw_get(everything.port, "/a/..%2F..%2Fetc")
    assert status == 400
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: application/json\r\n" in head
    assert orjson.loads(body)["error"]["code"] == "invalid_path"


def test_placeholders_carry_route_and_retry_after(everything: BackgroundServer) -> None:
    error = httpx.get(everything.url + "/throttled").json()["error"]
    assert (error["route"], error["retry_after"], error["message"]) == ("/throttled", 7, "Slow down.")
    error = httpx.get(everything.url + "/maintenance").json()["error"]
    assert (error["retry_after"], error["message"]) == (120, "Back soon.")
    error = httpx.get(everything.url + "/nowhere").json()["error"]
    assert (error["route"], error["retry_after"], error["message"]) == (None, None, "Not Found")


def test_reasons_land_in_the_access_log(everything: BackgroundServer, access_log: Records) -> None:
    ids = [httpx.get(everything.url + path, timeout=10).headers["x-request-id"]
           for path in ("/nowhere", "/slow?delay=2", "/fault", "/maintenance")]
    lines = access_log.wait_for(ids)
    assert [line["reason"] for line in lines] == ["no_route", "upstream_timeout", "fault_injected",
                                                  "request_terminated"]
    assert [line["status"] for line in lines] == [404, 504, 502, 503]


def test_user_code_exception_is_500_in_the_users_format(
    everything: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="asgigate"):
        response = httpx.get(everything.url + "/crash")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["message"] == "Internal Server Error"
    request_id = response.headers["x-request-id"]
    assert error["request_id"] == request_id
    logged = [r for r in caplog.records if r.name == "asgigate" and request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "secret-internal-state" in str(logged[0].exc_info[1])


def test_debug_mode_shows_the_traceback(upstream: BackgroundServer) -> None:
    with BackgroundServer(Everything(upstream.url, "http://127.0.0.1:9", debug=True)) as server:
        response = httpx.get(server.url + "/crash")
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "Traceback" in message and "RuntimeError: secret-internal-state" in message


# --- content negotiation and protocol headers ------------------------------------------------------------------


PAGE = "<html><style>p{color:red}</style><h1>{status} {title}</h1><p>{detail}</p><i>{request_id}</i></html>"


class Formats(Gateway):
    def __init__(self) -> None:
        super().__init__(
            errors=Reply(
                json={"code": "{code}", "detail": "{detail}"},
                html=PAGE,
                text="{status} {code}: {message}\n",
                xml="<error><code>{code}</code><detail>{detail}</detail></error>",
            )
        )

    def routes(self) -> list[Route | Group]:
        return [
            Route("/refuse", Direct(text="x"), policies=[Raise(lambda: Forbidden("<script>alert(1)</script> & co"))]),
            Route("/throttled", Direct(text="x"), policies=[Raise(throttled)]),
            Route("/auth", Direct(text="x"), policies=[Raise(lambda: InvalidToken())]),
            Route("/only-get", Direct(text="x"), methods=["GET"]),
        ]


@pytest.fixture(scope="module")
def formats() -> Iterator[BackgroundServer]:
    with BackgroundServer(Formats()) as server:
        yield server


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/problem+json", "application/json"),
        ("application/vnd.api+json", "application/json"),
        ("text/html", "text/html; charset=utf-8"),
        (BROWSER, "text/html; charset=utf-8"),
        ("text/*", "text/html; charset=utf-8"),
        ("text/plain", "text/plain; charset=utf-8"),
        ("text/html;q=0.1, text/plain;q=0.5", "text/plain; charset=utf-8"),
        ("application/xml", "application/xml; charset=utf-8"),
        ("text/xml", "application/xml; charset=utf-8"),
        ("image/png", "application/json"),  # nothing acceptable: JSON, never a 406 for an error
        ("garbage;;,", "application/json"),
    ],
)
def test_negotiation_picks_the_format(formats: BackgroundServer, accept: str | None, content_type: str) -> None:
    headers = {"accept": accept} if accept is not None else {}
    response = httpx.get(formats.url + "/refuse", headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"] == content_type
    assert "accept" in response.headers["vary"].lower()


def test_each_format_renders_and_escapes(formats: BackgroundServer) -> None:
    url = formats.url + "/refuse"
    assert httpx.get(url).json() == {"code": "forbidden", "detail": "<script>alert(1)</script> & co"}
    html = httpx.get(url, headers={"accept": "text/html"})
    assert "<h1>403 Forbidden</h1>" in html.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html.text and "<script>" not in html.text
    assert "p{color:red}" in html.text  # CSS braces are not placeholders
    assert f"<i>{html.headers['x-request-id']}</i>" in html.text
    assert httpx.get(url, headers={"accept": "text/plain"}).text == (
        "403 forbidden: <script>alert(1)</script> & co\n"
    )
    xml = httpx.get(url, headers={"accept": "application/xml"}).text
    assert xml == "<error><code>forbidden</code><detail>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</detail></error>"


@pytest.mark.parametrize("accept", ["application/json", "text/html", "text/plain", "application/xml"])
def test_protocol_headers_survive_every_format(formats: BackgroundServer, accept: str) -> None:
    throttled_reply = httpx.get(formats.url + "/throttled", headers={"accept": accept})
    assert throttled_reply.status_code == 429
    assert throttled_reply.headers["retry-after"] == "7"
    assert throttled_reply.headers["ratelimit-limit"] == "10"
    assert throttled_reply.headers["ratelimit-remaining"] == "0"
    assert throttled_reply.headers["ratelimit-reset"] == "7"
    auth = httpx.get(formats.url + "/auth", headers={"accept": accept})
    assert auth.status_code == 401
    assert auth.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    not_allowed = httpx.delete(formats.url + "/only-get", headers={"accept": accept})
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "GET, HEAD"


class Plain(Gateway):
    def routes(self) -> list[Route | Group]:
        return [Route("/refuse", Direct(text="x"), policies=[Raise(lambda: Forbidden("<b>no</b>"))])]


def test_builtin_reply_is_problem_json_or_a_page_for_browsers() -> None:
    with BackgroundServer(Plain()) as server:
        api = httpx.get(server.url + "/missing")
        page = httpx.get(server.url + "/missing", headers={"accept": BROWSER})
        refused = httpx.get(server.url + "/refuse", headers={"accept": BROWSER})
        text = httpx.get(server.url + "/missing", headers={"accept": "text/plain"})
    assert api.headers["content-type"] == "application/problem+json"
    assert api.json()["code"] == "no_route"
    assert page.status_code == 404
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>404 Not Found</title>" in page.text
    assert "<code>no_route</code>" in page.text
    assert page.headers["x-request-id"] in page.text
    assert "&lt;b&gt;no&lt;/b&gt;" in refused.text and "<b>no</b>" not in refused.text
    assert text.headers["content-type"] == "application/problem+json"  # no text format given: JSON


class JSONOnly(Gateway):
    def __init__(self) -> None:
        super().__init__(errors=Reply(json={"oops": "{code}"}, html=False,
                                      headers={"content-type": "application/vnd.shop.error+json"}))


def test_html_false_gives_browsers_json_too() -> None:
    with BackgroundServer(JSONOnly()) as server:
        response = httpx.get(server.url + "/missing", headers={"accept": BROWSER})
    assert response.headers.get_list("content-type") == ["application/vnd.shop.error+json"]  # a header replaces it
    assert response.json() == {"oops": "no_route"}
    assert "vary" not in response.headers  # one format: nothing to vary on


# --- the cascade: route → groups → gateway; the most specific rule first --------------------------------------


async def token_renderer(exchange: Exchange, error: GatewayError) -> Response:
    return PlainTextResponse(f"token renderer: {error.code} {error.status_code}", status_code=error.status_code)


def rate_renderer(exchange: Exchange, error: GatewayError) -> Response:
    return PlainTextResponse(f"rate renderer: {error.detail}", status_code=error.status_code)


def broken_renderer(exchange: Exchange, error: GatewayError) -> Response:
    raise ValueError("renderer bug")


class Layered(Gateway):
    def __init__(self) -> None:
        super().__init__(
            errors=ErrorReplies(
                Reply(json={"gw": "{code}", "detail": "{detail}"}, html="<p>gw {code}</p>"),
                on={"5xx": Reply(detail="Something broke on our side ({code})."),
                    NotFound: Reply(json={"gw404": "{detail}"}, detail="Nothing at {path}.")},
            )
        )

    def routes(self) -> list[Route | Group]:
        refuse = Raise(lambda: Forbidden("no"))
        return [
            Route("/plain/refuse", Direct(text="x"), policies=[refuse]),
            Route("/plain/crash", crash),
            Route("/plain/broken", Direct(text="x"), policies=[refuse], errors=broken_renderer),
            Group(
                "/g",
                [
                    Route("/refuse", Direct(text="x"), policies=[refuse]),
                    Route("/own", Direct(text="x"), policies=[refuse],
                          errors=Reply(status=451, title="Unavailable For Legal Reasons")),
                    Route("/token", Direct(text="x"), policies=[Raise(lambda: InvalidToken())]),
                    Route("/throttled", Direct(text="x"), policies=[Raise(throttled)]),
                    Route("/scope", Direct(text="x"), policies=[Raise(lambda: InsufficientScope(scope="admin"))]),
                    Group("/inner", [Route("/refuse", Direct(text="x"), policies=[refuse])],
                          errors=Reply(headers={"x-inner": "yes"})),
                ],
                errors=ErrorReplies(
                    on={
                        403: Reply(json={"group": "{code}"}),
                        Unauthorized: token_renderer,
                        "rate_limited": rate_renderer,
                        "4xx": Reply(headers={"x-group": "4xx {status}"}),
                    }
                ),
            ),
        ]


@pytest.fixture(scope="module")
def layered() -> Iterator[BackgroundServer]:
    with BackgroundServer(Layered()) as server:
        yield server


def test_gateway_level_rules(layered: BackgroundServer) -> None:
    assert httpx.get(layered.url + "/plain/refuse").json() == {"gw": "forbidden", "detail": "no"}
    crashed = httpx.get(layered.url + "/plain/crash")
    assert crashed.status_code == 500
    assert crashed.json() == {"gw": "internal_error", "detail": "Something broke on our side (internal_error)."}
    missing = httpx.get(layered.url + "/g/missing")  # no route matched: only the gateway's rules apply
    assert missing.json() == {"gw404": "Nothing at /g/missing."}
    assert "x-group" not in missing.headers


def test_group_rules_win_over_the_gateways(layered: BackgroundServer) -> None:
    refused = httpx.get(layered.url + "/g/refuse")
    assert refused.status_code == 403
    assert refused.json() == {"group": "forbidden"}
    assert refused.headers["x-group"] == "4xx 403"  # the family rule adds its header to the status rule's body


def test_formats_cascade_independently(layered: BackgroundServer) -> None:
    # the group gave JSON only: a browser gets the gateway's HTML
    page = httpx.get(layered.url + "/g/refuse", headers={"accept": "text/html"})
    assert page.text == "<p>gw forbidden</p>"
    assert page.headers["x-group"] == "4xx 403"


def test_route_rule_wins_and_keeps_the_rest(layered: BackgroundServer) -> None:
    own = httpx.get(layered.url + "/g/own")
    assert own.status_code == 451
    assert own.json() == {"group": "forbidden"}  # the body still comes from the group's 403 rule
    assert own.headers["x-group"] == "4xx 451"


def test_nested_groups(layered: BackgroundServer) -> None:
    inner = httpx.get(layered.url + "/g/inner/refuse")
    assert inner.json() == {"group": "forbidden"}
    assert (inner.headers["x-inner"], inner.headers["x-group"]) == ("yes", "4xx 403")


def test_function_rules(layered: BackgroundServer) -> None:
    token = httpx.get(layered.url + "/g/token")
    assert (token.status_code, token.text) == (401, "token renderer: invalid_token 401")  # a base-class rule
    assert token.headers["www-authenticate"] == 'Bearer error="invalid_token"'  # added though the function forgot
    assert "x-group" not in token.headers  # a function ends the cascade: the "4xx" rule after it is not read
    rate = httpx.get(layered.url + "/g/throttled")
    assert (rate.status_code, rate.text) == (429, "rate renderer: Slow down.")  # a code rule
    assert rate.headers["retry-after"] == "7"
    scope = httpx.get(layered.url + "/g/scope")
    assert scope.json() == {"group": "insufficient_scope"}  # the 403 status rule beats the gateway default
    assert scope.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="admin"'


def test_a_broken_renderer_falls_back_to_problem_json(
    layered: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="asgigate"):
        response = httpx.get(layered.url + "/plain/broken")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "forbidden"
    assert any("error renderer failed" in r.getMessage() for r in caplog.records)


class Legacy(Gateway):
    """An overridden render_error stays the last word; templates before it answer the formats they have."""

    def __init__(self) -> None:
        super().__init__(errors=Reply(html="<p>{code}</p>"))

    async def render_error(self, exchange: Exchange, error: GatewayError) -> Response:
        return PlainTextResponse(f"legacy {error.code}", status_code=error.status_code)


def test_render_error_override_is_the_last_word() -> None:
    with BackgroundServer(Legacy()) as server:
        assert httpx.get(server.url + "/x").text == "legacy no_route"
        assert httpx.get(server.url + "/x", headers={"accept": "text/plain"}).text == "legacy no_route"
        assert httpx.get(server.url + "/x", headers={"accept": BROWSER}).text == "<p>no_route</p>"


# --- direct checks: rule order, build-time errors, templates, Accept -------------------------------------------


def test_rule_order_within_a_level() -> None:
    rules = ErrorReplies(
        Reply(title="default"),
        on={ClientError: Reply(title="class"), 403: Reply(title="status"), Forbidden: Reply(title="exact"),
            "4xx": Reply(title="family"), "insufficient_scope": Reply(title="code")},
    )
    assert [r.title for r in rules.matching(Forbidden())] == ["exact", "status", "class", "family", "default"]
    assert [r.title for r in rules.matching(InsufficientScope())] == ["code", "status", "exact", "class", "family",
                                                                      "default"]
    assert [r.title for r in rules.matching(NotFound())] == ["class", "family", "default"]
    assert [r.title for r in rules.matching(GatewayError())] == ["default"]


def gateway_with(**route_kwargs: Any) -> Gateway:
    class Bad(Gateway):
        def routes(self) -> list[Route | Group]:
            return [Route("/orders", Direct(text="x"), **route_kwargs)]

    return Bad()


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        (Reply(json={"e": "{nope}"}), r"route '/orders': Reply template: unknown placeholder \{nope\}"),
        (Reply(html="<p>{cod}</p>"), r"unknown placeholder \{cod\}"),
        (Reply(headers={"x-e": "{request}"}), r"unknown placeholder \{request\}"),
        (Reply(json={"e": object()}), "is not a JSON value"),
        (Reply(json={1: "x"}), "keys must be strings"),
        (Reply(status=204), "cannot carry an error body"),
        (Reply(headers={"x bad": "1"}), "'x bad' is not a valid HTTP field name"),
        (Reply(detail="{details}"), r"unknown placeholder \{details\}"),
        (ErrorReplies(on={"rate_limted": Reply()}), "'rate_limted' is neither '4xx', '5xx' nor the code"),
        (ErrorReplies(on={302: Reply()}), "not a 4xx or 5xx status"),
        (ErrorReplies(on={ValueError: Reply()}), "ValueError is not a GatewayError"),
        (ErrorReplies(on={404: "page"}), "neither a Reply nor a function"),
        (ErrorReplies(ErrorReplies()), "cannot be nested"),
    ],
)
def test_bad_settings_fail_the_build_naming_the_route(errors: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        gateway_with(errors=errors).build()
    assert "errors= of route '/orders'" in str(caught.value)


def test_bad_gateway_and_group_settings_name_their_place() -> None:
    class BadGateway(Gateway):
        def __init__(self) -> None:
            super().__init__(errors=Reply(text="{oops}"))

    with pytest.raises(ConfigurationError, match="errors= of the gateway"):
        BadGateway().build()

    class BadGroup(Gateway):
        def routes(self) -> list[Route | Group]:
            return [Group("/v1", [Route("/a", Direct(text="x"))], errors=Reply(text="{oops}"))]

    with pytest.raises(ConfigurationError, match=r"errors= of group '/v1' \(route '/v1/a'\)"):
        BadGroup().build()


def test_reply_is_comparable_and_readable() -> None:
    assert Reply(json={"a": "{code}"}, status=418) == Reply(status=418, json={"a": "{code}"})
    assert Reply(text="x") != Reply(text="y")
    assert repr(Reply(status=503, text="down")) == "Reply(status=503, text='down')"
    assert repr(Reply(headers={"X-A": "{code}"})) == "Reply(headers={'x-a': '{code}'})"
    with pytest.raises(AttributeError, match="Reply is immutable"):
        Reply().status = 500
    rules = ErrorReplies(Reply(text="x"), on={NotFound: token_renderer, "5xx": Reply(detail="d")})
    assert rules == ErrorReplies(Reply(text="x"), on={NotFound: token_renderer, "5xx": Reply(detail="d")})
    assert repr(rules) == "ErrorReplies(Reply(text='x'), on={NotFound: token_renderer, '5xx': Reply(detail='d')})"


def test_text_templates() -> None:
    names = {"code", "status"}
    assert TextTemplate("{code} {{code}} a{b:c} { code }", names).render({"code": "x"}) == "x {code} a{b:c} { code }"
    assert TextTemplate("{status}", names).render({"status": None}) == ""
    with pytest.raises(TemplateError, match=r"write \{\{title\}\} for a literal"):
        TextTemplate("{title}", names)


def test_json_templates_keep_types() -> None:
    template = JSONTemplate({"s": "{status}", "m": "HTTP {status}", "l": ["{code}", 1, None, True], "{code}": 2,
                             "lit": "{{code}}"}, {"code", "status"})
    assert template.render({"status": 404, "code": "no_route"}) == {
        "s": 404, "m": "HTTP 404", "l": ["no_route", 1, None, True], "no_route": 2, "lit": "{code}"
    }
    assert template.render({"status": None, "code": "c"})["s"] is None


@pytest.mark.parametrize(
    ("accept", "available", "chosen"),
    [
        ("", ["json", "html"], "json"),
        (BROWSER, ["json", "html"], "html"),
        (BROWSER, ["json", "text", "xml"], "xml"),  # application/xml;q=0.9 beats */*;q=0.8
        ("text/html;q=0, */*", ["json", "html"], "json"),
        ("text/*;q=0.5, text/plain", ["json", "html", "text"], "text"),
        ("application/json;q=0.2, text/html;q=0.3", ["json", "html"], "html"),
        ("application/json;q=abc", ["json", "html"], "json"),
        ("image/png", ["html", "text"], "html"),
    ],
)
def test_negotiate(accept: str, available: list[str], chosen: str) -> None:
    assert negotiate(accept, available) == chosen
