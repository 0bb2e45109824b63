"""GrpcUpstream: a gRPC backend and its pool of grpc.aio channels (plaintext or TLS, with keepalive)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from ..errors import ConfigurationError
from .base import BaseUpstream

__all__ = ["GrpcUpstream"]


class GrpcUpstream(BaseUpstream):
    """A gRPC backend: ``GrpcUpstream("grpc://orders:50051")`` or ``"grpcs://..."`` for TLS.

    `channels` grpc.aio channels are opened lazily (each one HTTP/2 connection multiplexing many calls) and used
    round-robin; the gateway closes them at shutdown. `root_certificates` / `private_key` / `certificate_chain`
    (PEM bytes) configure TLS; `keepalive` (seconds) sends HTTP/2 pings on idle connections; `options` are extra
    grpc channel arguments. It needs the `grpc` extra; it is a sibling of the HTTP `Upstream`, not a kind of it,
    and the targets that take it (`GrpcService`, a GraphQL `GrpcBackend`) say so at build time.
    """

    kind = "a gRPC upstream"

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        channels: int = 1,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        server_hostname: str | None = None,
        keepalive: float | None = 30.0,
        max_message_size: int = 16 * 1024 * 1024,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("grpc", "grpcs") or not parts.hostname or not parts.port:
            raise ConfigurationError(f"GrpcUpstream URL {url!r} must be grpc://host:port or grpcs://host:port.")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError(f"GrpcUpstream URL {url!r} must not have a path, query or fragment.")
        if channels < 1:
            raise ConfigurationError("GrpcUpstream needs at least one channel.")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        super().__init__(url, scheme=parts.scheme, host=parts.hostname, port=parts.port,
                         authority=f"{host}:{parts.port}", name=name)
        self.tls = parts.scheme == "grpcs"
        self.channel_count = channels
        self._credentials = (
            grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain) if self.tls else None
        )
        args: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_size),
            ("grpc.max_send_message_length", max_message_size),
            # Separate channels must not share one subchannel (connection), or pooling would pool nothing.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if keepalive:
            args += [
                ("grpc.keepalive_time_ms", int(keepalive * 1000)),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if server_hostname:
            args.append(("grpc.ssl_target_name_override", server_hostname))
        self.options = [*args, *options]
        self._channels: list[grpc.aio.Channel] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = itertools.count()

    def channel(self) -> grpc.aio.Channel:
        """A channel of the pool, round-robin; opened on first use in the running event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # grpc.aio channels belong to one event loop (a gateway served again in a new loop gets new ones).
            self._channels = []
            self._loop = loop
        if not self._channels:
            target = self.authority
            for _ in range(self.channel_count):
                if self._credentials is not None:
                    self._channels.append(grpc.aio.secure_channel(target, self._credentials, options=self.options))
                else:
                    self._channels.append(grpc.aio.insecure_channel(target, options=self.options))
        return self._channels[next(self._next) % len(self._channels)]

    async def aclose(self) -> None:
        channels, self._channels = self._channels, []
        loop, self._loop = self._loop, None
        if loop is not None and loop is asyncio.get_running_loop():
            for channel in channels:
                await channel.close()
