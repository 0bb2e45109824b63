"""The policy chain: order, stopping, errors, skip, Starlette middleware in the list, build-time checks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse, Response

from asgigate import (
    ConfigurationError,
    Direct,
    Exchange,
    Forbidden,
    Gateway,
    Group,
    Policy,
    RateLimited,
    ResponseHead,
    Route,
)
from asgigate.exchange import SCOPE_KEY
from asgigate.responses import JSONResponse
from asgigate.testing import BackgroundServer
from asgigate.types import ASGIApp, Message, Receive, Scope, Send

from servers import raw_get


def add_trace(headers: Any, label: str) -> None:
    previous = headers.get("x-trace")
    headers["x-trace"] = f"{previous},{label}" if previous else label


class Tag(Policy):
    """Request phase recorded in `exchange.state["trace"]`, response phase in the `x-trace` header."""

    def __init__(self, label: str) -> None:
        self.label = label

    async def on_request(self, exchange: Exchange) -> Response | None:
        exchange.state.setdefault("trace", []).append(self.label)
        return None

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        add_trace(head.headers, self.label)


class Everywhere(Tag):
    """A gateway-wide policy some routes skip."""


class Answer(Tag):
    """Answers locally: the chain stops here."""

    async def on_request(self, exchange: Exchange) -> Response | None:
        await super().on_request(exchange)
        return PlainTextResponse("answered by " + self.label + " after " + ",".join(exchange.state["trace"]),
                                 status_code=202)


class Refuse(Tag):
    async def on_request(self, exchange: Exchange) -> Response | None:
        await super().on_request(exchange)
        raise Forbidden("not you")


class Throttle(Tag):
    async def on_request(self, exchange: Exchange) -> Response | None:
        await super().on_request(exchange)
        raise RateLimited("slow down", retry_after=7)


class Crash(Tag):
    async def on_request(self, exchange: Exchange) -> Response | None:
        raise RuntimeError("policy-secret-xyz")


class TraceMiddleware:
    """A plain ASGI middleware (what any Starlette middleware is) taking part in the trace."""

    def __init__(self, app: ASGIApp, label: str) -> None:
        self.app = app
        self.label = label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and SCOPE_KEY in scope:
            scope[SCOPE_KEY].state.setdefault("trace", []).append(self.label)

        async def traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                head = ResponseHead(message)
                add_trace(head.headers, self.label)
            await send(message)

        await self.app(scope, receive, traced)


class Upper(Policy):
    """A body-level policy: overrides `wrap` and upper-cases the response body."""

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            scope[SCOPE_KEY].state.setdefault("trace", []).append("upper")

            async def upper(message: Message) -> None:
                if message["type"] == "http.response.body":
                    message = {**message, "body": message.get("body", b"").upper()}
                await send(message)

            await app(scope, receive, upper)

        return wrapped


class UpperAndTag(Upper, Tag):
    """Both a body wrapper and hooks: the hooks run around its own wrapper."""

    def __init__(self, label: str) -> None:
        Tag.__init__(self, label)


async def trace(exchange: Exchange) -> JSONResponse:
    return JSONResponse({"trace": exchange.state.get("trace", [])})


async def text_trace(exchange: Exchange) -> PlainTextResponse:
    return PlainTextResponse("trace=" + ",".join(exchange.state.get("trace", [])))


async def refuse_target(exchange: Exchange) -> Response:
    raise Forbidden("target says no")


async def crash_target(exchange: Exchange) -> Response:
    raise ValueError("target-secret-xyz")


class Chains(Gateway):
    def policies(self) -> list[Policy | Middleware]:
        return [Tag("gw"), Everywhere("everywhere")]

    def middleware(self) -> list[Middleware]:
        return [Middleware(TraceMiddleware, label="edge")]

    def routes(self) -> list[Route | Group]:
        return [
            Group(
                "/g",
                [
                    Route("/order", trace, policies=[Tag("r1"), Tag("r2")]),
                    Route("/answer", trace, policies=[Tag("a"), Answer("b"), Tag("c")]),
                    Route("/refuse", trace, policies=[Tag("a"), Refuse("b"), Tag("c")]),
                    Route("/throttle", trace, policies=[Tag("a"), Throttle("b"), Tag("c")]),
                    Route("/target-refuses", refuse_target, policies=[Tag("a")]),
                    Route("/target-crashes", crash_target, policies=[Tag("a")]),
                    Route("/policy-crashes", trace, policies=[Tag("a"), Crash("b")]),
                    Route("/mixed", trace,
                          policies=[Tag("a"), Middleware(TraceMiddleware, label="mw"), Tag("b")]),
                    Route("/mixed-answer", trace,
                          policies=[Tag("a"), Middleware(TraceMiddleware, label="mw"), Answer("b")]),
                    Route("/mixed-target-refuses", refuse_target,
                          policies=[Tag("a"), Middleware(TraceMiddleware, label="mw")]),
                    Route("/wrapped", text_trace, policies=[Tag("a"), Upper(), Tag("b")]),
                    Route("/wrapped-hooked", text_trace, policies=[Tag("a"), UpperAndTag("both"), Tag("b")]),
                    Route("/skip", trace, skip={Everywhere}),
                ],
                policies=[Tag("group")],
            ),
            Route("/direct", Direct(json={"ok": True}), policies=[Answer("local")], skip={Tag}),
        ]


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with BackgroundServer(Chains(access_log=False)) as server, httpx.Client(base_url=server.url) as http:
        yield http


def test_request_hooks_outer_to_inner_response_hooks_reverse(client: httpx.Client) -> None:
    response = client.get("/g/order")
    assert response.status_code == 200
    assert response.json() == {"trace": ["gw", "everywhere", "group", "r1", "r2"]}
    assert response.headers["x-trace"] == "r2,r1,group,everywhere,gw,edge"


def test_local_reply_stops_the_chain(client: httpx.Client) -> None:
    response = client.get("/g/answer")
    assert response.status_code == 202
    # b ran after a; c and the target never ran.
    assert response.text == "answered by b after gw,everywhere,group,a,b"
    # Only the policies before b see the reply on its way out.
    assert response.headers["x-trace"] == "a,group,everywhere,gw,edge"


def test_refusal_is_rendered_and_earlier_response_hooks_run(client: httpx.Client) -> None:
    response = client.get("/g/refuse")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "forbidden"
    assert problem["detail"] == "not you"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-trace"] == "a,group,everywhere,gw,edge"


def test_rate_limited_carries_retry_after(client: httpx.Client) -> None:
    response = client.get("/g/throttle")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["code"] == "rate_limited"
    assert response.headers["x-trace"] == "a,group,everywhere,gw,edge"


def test_errors_from_the_target_pass_every_response_hook(client: httpx.Client) -> None:
    response = client.get("/g/target-refuses")
    assert response.status_code == 403
    assert response.json()["detail"] == "target says no"
    assert response.headers["x-trace"] == "a,group,everywhere,gw,edge"


def test_unexpected_exception_is_a_500_without_traceback(client: httpx.Client) -> None:
    for path in ("/g/target-crashes", "/g/policy-crashes"):
        response = client.get(path)
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "internal_error"
        assert problem["request_id"] == response.headers["x-request-id"]
        assert "detail" not in problem
        assert "secret-xyz" not in response.text
        assert "Traceback" not in response.text
        assert response.headers["x-trace"].endswith("gw,edge")


def test_debug_puts_the_traceback_in_detail() -> None:
    with BackgroundServer(Chains(access_log=False, debug=True)) as server:
        response = httpx.get(server.url + "/g/target-crashes")
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert "Traceback" in detail
    assert "ValueError: target-secret-xyz" in detail
    assert "crash_target" in detail


def test_starlette_middleware_runs_at_its_place(client: httpx.Client) -> None:
    response = client.get("/g/mixed")
    assert response.status_code == 200
    assert response.json()["trace"] == ["gw", "everywhere", "group", "a", "mw", "b"]
    assert response.headers["x-trace"] == "b,mw,a,group,everywhere,gw,edge"


def test_starlette_middleware_sees_local_replies_from_inside(client: httpx.Client) -> None:
    response = client.get("/g/mixed-answer")
    assert response.status_code == 202
    assert response.headers["x-trace"] == "mw,a,group,everywhere,gw,edge"


def test_starlette_middleware_sees_error_replies_from_inside(client: httpx.Client) -> None:
    response = client.get("/g/mixed-target-refuses")
    assert response.status_code == 403
    assert response.headers["x-trace"] == "mw,a,group,everywhere,gw,edge"


def test_wrap_policy_runs_at_its_place(client: httpx.Client) -> None:
    response = client.get("/g/wrapped")
    assert response.status_code == 200
    assert response.text == "TRACE=GW,EVERYWHERE,GROUP,A,UPPER,B"
    assert response.headers["x-trace"] == "b,a,group,everywhere,gw,edge"


def test_policy_with_wrap_and_hooks_runs_both(client: httpx.Client) -> None:
    response = client.get("/g/wrapped-hooked")
    assert response.status_code == 200
    assert response.text == "TRACE=GW,EVERYWHERE,GROUP,A,BOTH,UPPER,B"
    assert response.headers["x-trace"] == "b,both,a,group,everywhere,gw,edge"


def test_skip_removes_a_gateway_policy_from_one_route(client: httpx.Client) -> None:
    response = client.get("/g/skip")
    assert response.json()["trace"] == ["gw", "group"]
    assert response.headers["x-trace"] == "group,gw,edge"
    # skip={Tag} also drops subclasses (Everywhere), but never the route's own policies.
    response = client.get("/direct")
    assert response.status_code == 202
    assert response.text == "answered by local after local"


def test_edge_middleware_sees_every_reply(client: httpx.Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["x-trace"] == "edge"
    response = client.post("/direct")
    assert response.headers["x-trace"] == "edge"
    status, raw = raw_get(int(client.base_url.port or 0), "/a/%2e%2e/%2e%2e/x")
    assert status == 400
    assert b"\r\nx-trace: edge\r\n" in raw


# --- build-time checks ----------------------------------------------------------------------------------------


class Auth(Policy):
    async def on_request(self, exchange: Exchange) -> Response | None:
        exchange.identity = "someone"
        return None


class NeedsAuth(Policy):
    requires = (Auth,)


class AfterAuth(Policy):
    after = (Auth,)


def gateway_with(gateway_policies: list[Any], route_policies: list[Any] = ()) -> Gateway:  # type: ignore[assignment]
    class Built(Gateway):
        def policies(self) -> list[Any]:
            return gateway_policies

        def routes(self) -> list[Route]:
            return [Route("/checked", Direct(text="ok"), policies=route_policies, name="checked")]

    return Built()


def test_requires_missing() -> None:
    with pytest.raises(ConfigurationError) as info:
        gateway_with([Tag("t"), NeedsAuth()]).build()
    message = str(info.value)
    assert "NeedsAuth requires Auth to run before it" in message
    assert "1. Tag(label='t')  (gateway)" in message
    assert "2. NeedsAuth()  (gateway)" in message
    assert "-> Direct(" in message


def test_requires_in_the_wrong_order() -> None:
    with pytest.raises(ConfigurationError) as info:
        gateway_with([NeedsAuth()], [Auth()]).build()
    message = str(info.value)
    assert "NeedsAuth requires Auth" in message
    lines = message.splitlines()
    assert lines.index("  1. NeedsAuth()  (gateway)") < lines.index("  2. Auth()  (route)")


def test_requires_satisfied_anywhere_earlier() -> None:
    gateway = gateway_with([Auth()], [NeedsAuth()])
    gateway.build()
    assert "Auth()  (gateway)" in gateway.describe()


def test_after() -> None:
    with pytest.raises(ConfigurationError, match="AfterAuth must run after Auth") as info:
        gateway_with([AfterAuth(), Auth()]).build()
    assert "2. Auth()  (gateway)" in str(info.value)
    gateway_with([AfterAuth()]).build()  # Auth absent: fine
    gateway_with([Auth(), AfterAuth()]).build()


def test_neither_policy_nor_middleware() -> None:
    with pytest.raises(ConfigurationError, match="neither a Policy nor a starlette Middleware"):
        gateway_with([], [object()]).build()


def test_describe_lists_routes_with_chains_in_run_order() -> None:
    text = Chains().describe()
    assert text.startswith("Chains\n  edge: TraceMiddleware\n")
    sections = {section.splitlines()[0]: section for section in text.split("\n\n")[1:] if section.strip()}
    mixed = next(s for first, s in sections.items() if first.startswith("* /g/mixed "))
    assert mixed.splitlines()[1:] == [
        "  1. Tag(label='gw')  (gateway)",
        "  2. Everywhere(label='everywhere')  (gateway)",
        "  3. Tag(label='group')  (group)",
        "  4. Tag(label='a')  (route)",
        "  5. TraceMiddleware (ASGI middleware)  (route)",
        "  6. Tag(label='b')  (route)",
        "  -> Handler('trace')",
    ]
    skip = next(s for first, s in sections.items() if first.startswith("* /g/skip "))
    assert "Everywhere" not in skip
    route_lines = [first for first in sections if not first.startswith("upstreams")]
    assert len(route_lines) == len(Chains().routes()[0].flatten()) + 1  # type: ignore[union-attr]
    assert re.search(r"^\* /direct  \[/direct\]\n  1\. Answer\(label='local'\)  \(route\)\n  -> Direct", text, re.M)
