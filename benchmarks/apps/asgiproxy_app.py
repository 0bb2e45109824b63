"""``asgiproxy`` (PyPI) configured as its README shows, with two limits raised to be fair to it.

Its defaults cap concurrency at 20 upstream requests (``ProxyContext(max_concurrency=20)``) and aiohttp's
connector at 100 connections; both would dominate the 500-connection slow-upstream test, so they are raised
to match the hand-written aiohttp proxy. Everything else is asgiproxy's own code path.
"""

from __future__ import annotations

import os

import aiohttp
from asgiproxy.config import BaseURLProxyConfigMixin, ProxyConfig
from asgiproxy.context import ProxyContext
from asgiproxy.simple_proxy import make_simple_proxy_app


class UpstreamConfig(BaseURLProxyConfigMixin, ProxyConfig):
    upstream_base_url = os.environ["UPSTREAM_URL"]


class UnlimitedContext(ProxyContext):
    @property
    def session(self) -> aiohttp.ClientSession:
        if not self._session:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session


app = make_simple_proxy_app(UnlimitedContext(UpstreamConfig(), max_concurrency=10_000))
