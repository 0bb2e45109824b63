"""Start the real OpenID provider of tests/idp/server.mjs (node's oidc-provider) on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from servers import free_port, wait_port

IDP_DIR = Path(__file__).resolve().parent


def ensure_node_modules() -> None:
    """`npm install` the provider's packages on first use (./dev test does the same before the suite runs)."""
    if (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are needed for the OpenID provider tests (Debian: nodejs npm); "
                           "./dev test installs them")
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=IDP_DIR, check=True,
                   timeout=600)


@dataclass
class OpenIDProvider:
    url: str
    process: subprocess.Popen[bytes]

    def token(self, client: str = "orders-client", *, scope: str = "orders:read",
              resource: str = "urn:asgigate:rs") -> str:
        """A JWT access token from the client_credentials grant ('orders-client' has the secret 'orders-secret')."""
        secret = client.removesuffix("-client") + "-secret"
        response = httpx.post(f"{self.url}/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client, "client_secret": secret,
            "scope": scope, "resource": resource,
        })
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        assert body["token_type"] == "Bearer"
        token: str = body["access_token"]
        return token

    def grants(self, grant_type: str) -> int:
        """How many `grant_type` grants (``refresh_token``...) the provider has issued so far."""
        counts: dict[str, int] = httpx.get(f"{self.url}/test/grants", timeout=10).json()
        return counts.get(grant_type, 0)

    def sign_in(self, client: httpx.Client, login_url: str, username: str) -> httpx.Response:
        """A browser's login without the browser: from the gateway's login URL through the provider's dev login
        form and consent page, back to the gateway's callback; the callback's response (cookies set on `client`)."""
        response = client.get(login_url)
        while response.is_redirect:
            location = str(response.next_request.url) if response.next_request else response.headers["location"]
            if "/auth/callback" in location:
                return client.get(location)
            if "/interaction/" in location and not location.rstrip("/").endswith(("/login", "/confirm")):
                page = client.get(location)
                action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
                assert action is not None, page.text
                fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
                if 'name="login"' in page.text:
                    fields.update(login=username, password="anything")
                response = client.post(httpx.URL(location).join(action.group(1)), data=fields)
                continue
            response = client.get(location)
        raise AssertionError(f"the login did not come back to the callback: {response.status_code} {response.text}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def openid_provider(token_ttl: int = 300, *, rp_url: str | None = None) -> Iterator[OpenIDProvider]:
    """The provider on a free port; `rp_url` registers the browser client 'web-client' for that origin."""
    ensure_node_modules()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "TOKEN_TTL": str(token_ttl)}
    if rp_url is not None:
        env["RP_URL"] = rp_url
    process = subprocess.Popen(["node", "server.mjs"], cwd=IDP_DIR, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    provider = OpenIDProvider(f"http://127.0.0.1:{port}", process)
    try:
        wait_port(port, timeout=30, proc=process)
        yield provider
    finally:
        provider.stop()
