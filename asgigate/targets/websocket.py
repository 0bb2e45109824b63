"""WebSocket proxying: the client's WebSocket is bridged to one opened upstream with the `websockets` client."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, UpstreamConnectError

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..types import Receive, Send
    from .proxy import Proxy

__all__: list[str] = []  # internal: the WebSocket half of `Proxy`

# Headers the websocket client sets itself, or that only concern the client's own hop.
_SKIP = frozenset(
    {b"host", b"connection", b"upgrade", b"sec-websocket-key", b"sec-websocket-version",
     b"sec-websocket-extensions", b"sec-websocket-protocol", b"content-length", b"transfer-encoding"}
)


def _sendable(code: int) -> int:
    """The client's close code if a close frame may carry it (RFC 6455 7.4), else 1000.

    A client that closes without a code is reported as 1005, a lost connection as 1006: codes that only
    describe a close and that the websockets client refuses to send.
    """
    return code if code in _SENDABLE or 3000 <= code <= 4999 else 1000


_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


async def proxy_websocket(proxy: Proxy, exchange: Exchange, receive: Receive, send: Send) -> None:
    try:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigurationError(
            "WebSocket proxying needs the 'websockets' package: pip install asgigate[websocket]"
        ) from exc

    upstream = proxy.upstream
    if upstream.app is not None:
        from ..upstreams._asgi import websocket_in_process

        exchange.upstream = upstream.name
        headers, _, _ = proxy.request_headers(exchange)
        scope = dict(exchange.scope, headers=headers)
        await websocket_in_process(upstream.app, scope, proxy.upstream_target(exchange), receive, send)
        return
    scheme = "wss" if upstream.scheme == "https" else "ws"
    url = f"{scheme}://{upstream.authority}{proxy.upstream_target(exchange).decode('latin-1')}"
    headers, _, _ = proxy.request_headers(exchange)
    extra = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in _SKIP]
    subprotocols: list[Any] = list(exchange.scope.get("subprotocols") or [])
    exchange.upstream = upstream.name

    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        upstream_ws = await connect(
            url,
            additional_headers=extra,
            subprotocols=subprotocols or None,
            open_timeout=upstream.timeout.connect,
            max_size=None,
            compression=None,
        )
    except (TimeoutError, OSError, InvalidHandshake) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, InvalidStatus):
            reason = f"upstream answered {exc.response.status_code}"
        raise UpstreamConnectError(stage="websocket_connect", upstream=upstream.name, internal=reason) from None

    async with upstream_ws:
        await send({"type": "websocket.accept", "subprotocol": upstream_ws.subprotocol})
        exchange.status = 101

        async def client_to_upstream() -> None:
            while True:
                event = await receive()
                if event["type"] == "websocket.receive":
                    if event.get("bytes") is not None:
                        await upstream_ws.send(event["bytes"])
                    else:
                        await upstream_ws.send(event.get("text") or "")
                elif event["type"] == "websocket.disconnect":
                    await upstream_ws.close(code=_sendable(event.get("code", 1000)))
                    return

        async def upstream_to_client() -> None:
            try:
                async for data in upstream_ws:
                    if isinstance(data, bytes):
                        await send({"type": "websocket.send", "bytes": data})
                    else:
                        await send({"type": "websocket.send", "text": data})
            except ConnectionClosed:
                pass
            code = upstream_ws.close_code or 1000
            await send({"type": "websocket.close", "code": code if code not in (1005, 1006) else 1000,
                        "reason": upstream_ws.close_reason or ""})

        tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None and not isinstance(failure, (ConnectionClosed, OSError)):
                raise failure
