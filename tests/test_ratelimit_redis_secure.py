"""Rate limit stores on a Redis that wants a password, an ACL user, or TLS: real redis-server processes.

Both clients of a standalone Redis store are covered: RedisWire (fixed windows) and `limits`' coredis client
(the other strategies, usage() and reset()); one URI configures both.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from asgigate import ConcurrencyLimit, ConfigurationError, Direct, Gateway, RateLimit, Route
from asgigate.policies.ratelimit import Limit, RateLimitStore, by_route
from asgigate.policies.ratelimit._redis_wire import RedisError, RedisWire, tls_context
from asgigate.types import Receive, Scope, Send

from servers import free_port, wait_port

LIMIT = 3
STRATEGIES = ["fixed-window", "moving-window"]


# --- certificates and servers ------------------------------------------------------------------------------------

@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of these


def _key_and_cert(directory: Path, name: str, issuer: tuple[object, object] | None,
                  hosts: list[str]) -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    issuer_key, issuer_cert = issuer if issuer is not None else (key, None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if isinstance(issuer_cert, x509.Certificate) else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA; a server certificate for the name localhost only (not 127.0.0.1); a client certificate."""
    directory = tmp_path_factory.mktemp("redis-tls")
    ca = _key_and_cert(directory, "ca", None, [])
    _key_and_cert(directory, "server", ca, ["localhost"])
    _key_and_cert(directory, "client", ca, [])
    _key_and_cert(directory, "other-ca", None, [])
    return Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                 directory / "client.pem", directory / "client.key", directory / "other-ca.pem")


class SecureRedis:
    """A redis-server with extra arguments (a password, ACL users, TLS), killed by PID when done."""

    def __init__(self, *args: str, tls: Certs | None = None, client_certs: bool = False,
                 username: str | None = None, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.tls = tls
        self.client_certs = client_certs
        self.username = username
        self.password = password
        command = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if tls is None:
            command += ["--port", str(self.port)]
        else:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.server_cert),
                        "--tls-key-file", str(tls.server_key), "--tls-ca-cert-file", str(tls.ca),
                        "--tls-auth-clients", "yes" if client_certs else "no"]
        self.proc = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, 20, self.proc)
            deadline = time.monotonic() + 20
            while b"+PONG" not in self.raw(b"PING"):  # listening is not yet serving
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server does not answer PING")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def raw(self, *words: bytes) -> bytes:
        """One command after AUTH, over a connection of its own (TLS with the test CA): the raw replies."""
        commands = [(b"AUTH", *([self.username.encode()] if self.username else []), self.password.encode())
                    if self.password else None, words]
        payload = b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in c)
                           for c in commands if c)
        try:
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", self.port), timeout=5))
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=str(self.tls.ca))
                    context.check_hostname = False
                    if self.client_certs:
                        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
                    sock = stack.enter_context(context.wrap_socket(sock))
                sock.sendall(payload)
                return sock.recv(65536)
        except OSError:
            return b""

    def cli(self, *args: str) -> str:
        """redis-cli, a client independent of the code under test."""
        command = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning"]
        if self.tls is not None:
            command += ["--tls", "--cacert", str(self.tls.ca)]
            if self.client_certs:
                command += ["--cert", str(self.tls.client_cert), "--key", str(self.tls.client_key)]
        if self.username:
            command += ["--user", self.username]
        if self.password:
            command += ["--pass", self.password]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30, check=True).stdout

    def uri(self, credentials: str = "", host: str = "127.0.0.1", query: str = "") -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{credentials}{host}:{self.port}/0" + (f"?{query}" if query else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


PASSWORD = "p@ss:w/rd%"  # characters a URI must percent-encode
QUOTED = urllib.parse.quote(PASSWORD, safe="")


@pytest.fixture(scope="module")
def with_password() -> Iterator[SecureRedis]:
    server = SecureRedis("--requirepass", PASSWORD, password=PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def with_acl_user() -> Iterator[SecureRedis]:
    # the default user is off: only alice, with her password, gets in
    server = SecureRedis("--user", "default", "off", "--user", "alice", "on", ">wonder-land", "~*", "&*", "+@all",
                         username="alice", password="wonder-land")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def with_tls(certs: Certs) -> Iterator[SecureRedis]:
    server = SecureRedis(tls=certs)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def with_client_certs(certs: Certs) -> Iterator[SecureRedis]:
    server = SecureRedis("--requirepass", "s3cret", tls=certs, client_certs=True, password="s3cret")
    yield server
    server.stop()


# --- helpers -------------------------------------------------------------------------------------------------------

def limited(store: RateLimitStore, strategy: str, name: str) -> tuple[Gateway, RateLimit]:
    policy = RateLimit(Limit(f"{LIMIT}/minute", strategy=strategy), key=by_route, store=store, name=name)

    class Limited(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/x", Direct(text="x"), policies=[policy])]

    return Limited(request_id=False, access_log=False), policy


async def statuses(gateway: Gateway, count: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
        return [await client.get("/x") for _ in range(count)]


def assert_limited_in_redis(server: SecureRedis, store: RateLimitStore, strategy: str) -> None:
    """LIMIT admitted then 429, every decision made in this Redis by the client the strategy uses."""
    name = f"{strategy}-{time.time_ns()}"
    gateway, policy = limited(store, strategy, name)

    async def run() -> None:
        responses = await statuses(gateway, LIMIT + 2)
        assert [r.status_code for r in responses] == [200] * LIMIT + [429] * 2
        assert responses[-1].headers["content-type"] == "application/problem+json"
        assert responses[-1].json()["status"] == 429
        (usage,) = await policy.usage("/x")
        assert usage.remaining == 0
        assert store.wire is not None
        # fixed windows go through RedisWire; the other strategies through limits' client alone
        assert (store.wire._protocol is not None) == (strategy == "fixed-window")
        await store.aclose()  # its connections belong to this event loop

    asyncio.run(run())
    assert (store.failures, store.last_error, store.fallbacks) == (0, None, 0)
    keys = server.cli("--scan", "--pattern", f"LIMITS:*{name}*").split()
    assert len(keys) == 1, keys
    if strategy == "fixed-window":  # every hit is counted, the refused ones too
        assert server.cli("GET", keys[0]).strip() == str(LIMIT + 2)


class HeldRoute:
    """A gateway whose one route, /x behind `slots`, holds every request until `release` is set.

    `both_in` is set when the second request has arrived.
    """

    def __init__(self, slots: ConcurrencyLimit) -> None:
        self.entered = 0
        self.both_in, self.release = asyncio.Event(), asyncio.Event()
        hold = self._hold

        class Held(Gateway):
            def routes(self) -> list[Route]:
                return [Route("/x", hold, policies=[slots])]

        self.gateway = Held(request_id=False, access_log=False)

    async def _hold(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        if self.entered == 2:
            self.both_in.set()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


# --- a password, an ACL user -------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_password_in_the_uri(with_password: SecureRedis, strategy: str) -> None:
    store = RateLimitStore(with_password.uri(f":{QUOTED}@"), timeout=5, connect_timeout=10)
    assert store.wire is not None and store.wire.password == PASSWORD
    assert QUOTED not in repr(store) and PASSWORD not in repr(store)
    assert_limited_in_redis(with_password, store, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_acl_user_in_the_uri(with_acl_user: SecureRedis, strategy: str) -> None:
    store = RateLimitStore(with_acl_user.uri("alice:wonder-land@"), timeout=5, connect_timeout=10)
    assert_limited_in_redis(with_acl_user, store, strategy)


def test_credentials_as_options(with_acl_user: SecureRedis) -> None:
    store = RateLimitStore(with_acl_user.uri(), timeout=5, connect_timeout=10,
                           options={"username": "alice", "password": "wonder-land"})
    assert store.wire is not None  # username and password options do not cost the fast path
    assert_limited_in_redis(with_acl_user, store, "fixed-window")


@pytest.mark.parametrize("credentials", ["alice:wrong@", "", "nobody:wonder-land@"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_wrong_credentials_fail_over_not_500(with_acl_user: SecureRedis, strategy: str, credentials: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Refused credentials: the store goes down at the first call, says why once, and on_failure decides."""
    caplog.set_level(logging.WARNING, "asgigate.ratelimit")
    uri = with_acl_user.uri(credentials)
    local = RateLimitStore(uri, timeout=5, connect_timeout=10, retry_interval=60)
    closed = RateLimitStore(uri, timeout=5, connect_timeout=10, retry_interval=60, on_failure="closed")
    opened = RateLimitStore(uri, timeout=5, connect_timeout=10, retry_interval=60, on_failure="open")
    run_id = f"refused{time.time_ns()}"

    async def run() -> None:
        async with asyncio.timeout(60):  # never a hang
            # "local": still exactly the limit, counted in this process's memory
            codes = [r.status_code for r in await statuses(limited(local, strategy, f"local-{run_id}")[0], LIMIT + 1)]
            assert codes == [200] * LIMIT + [429]
            refused = await statuses(limited(closed, strategy, f"closed-{run_id}")[0], 2)
            assert [r.status_code for r in refused] == [503, 503]
            assert refused[0].headers["content-type"] == "application/problem+json"
            assert refused[0].json()["code"] == "request_terminated"
            assert refused[0].headers["retry-after"] == "1"
            admitted = await statuses(limited(opened, strategy, f"open-{run_id}")[0], LIMIT + 1)
            assert [r.status_code for r in admitted] == [200] * (LIMIT + 1)
        for store in (local, closed, opened):
            await store.aclose()

    asyncio.run(run())
    for store in (local, closed, opened):
        assert not store.healthy and store.outages == 1
        assert store.last_error is not None
        assert any(word in store.last_error.upper() for word in ("WRONGPASS", "NOAUTH", "AUTHENTICATION")), \
            store.last_error
    warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 3, warnings  # once per store, not once per request
    assert all(uri not in w and "wonder-land" not in w for w in warnings)
    assert with_acl_user.cli("--scan", "--pattern", f"*{run_id}*").split() == []  # nothing got in


def test_wire_reports_refused_credentials(with_acl_user: SecureRedis) -> None:
    async def run() -> None:
        for credentials, word in [("alice:wrong@", "WRONGPASS"), ("", "NOAUTH")]:
            wire = RedisWire(with_acl_user.uri(credentials))
            with pytest.raises(RedisError, match=word):
                async with asyncio.timeout(30):
                    await wire.incr_window("k", 60)
            wire.close()

    asyncio.run(run())


# --- TLS ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tls_with_a_private_ca(with_tls: SecureRedis, certs: Certs, strategy: str) -> None:
    store = RateLimitStore(with_tls.uri(query=f"ssl_ca_certs={certs.ca}"), timeout=5, connect_timeout=10)
    assert store.wire is not None and store.wire.ssl is not None
    assert store.wire.ssl.verify_mode != ssl.CERT_NONE
    assert str(certs.ca) not in repr(store)
    assert_limited_in_redis(with_tls, store, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tls_hostname_checked_when_asked(with_tls: SecureRedis, certs: Certs, strategy: str) -> None:
    """The certificate names localhost: with ssl_check_hostname=true, localhost passes and 127.0.0.1 does not."""
    query = f"ssl_ca_certs={certs.ca}&ssl_check_hostname=true"
    good = RateLimitStore(with_tls.uri(host="localhost", query=query), timeout=5, connect_timeout=10)
    assert good.wire is not None and good.wire.ssl is not None and good.wire.ssl.check_hostname
    assert_limited_in_redis(with_tls, good, strategy)
    bad = RateLimitStore(with_tls.uri(query=query), timeout=5, connect_timeout=10, on_failure="closed",
                         retry_interval=60)

    async def run() -> None:
        async with asyncio.timeout(60):
            assert [r.status_code for r in await statuses(limited(bad, strategy, "bad")[0], 1)] == [503]
        await bad.aclose()

    asyncio.run(run())
    assert not bad.healthy and bad.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in bad.last_error


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tls_with_an_ssl_context_option(with_tls: SecureRedis, certs: Certs, strategy: str) -> None:
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.check_hostname = False
    store = RateLimitStore(with_tls.uri(), timeout=5, connect_timeout=10, options={"ssl_context": context})
    assert store.wire is not None and store.wire.ssl is context
    assert_limited_in_redis(with_tls, store, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tls_with_client_certificates(with_client_certs: SecureRedis, certs: Certs, strategy: str) -> None:
    query = f"ssl_ca_certs={certs.ca}&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}"
    store = RateLimitStore(with_client_certs.uri(":s3cret@", query=query), timeout=5, connect_timeout=10)
    assert_limited_in_redis(with_client_certs, store, strategy)


def test_concurrency_limit_over_tls_with_a_password(with_client_certs: SecureRedis, certs: Certs) -> None:
    """ConcurrencyLimit's slots (coredis scripts) in a Redis that wants TLS, a client certificate and a password."""
    query = f"ssl_ca_certs={certs.ca}&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}"
    store = RateLimitStore(with_client_certs.uri(":s3cret@", query=query), timeout=5, connect_timeout=10)
    name = f"slots{time.time_ns()}"
    slots = ConcurrencyLimit(2, store=store, name=name)
    key = f"LIMITS:asgigate-concurrency/{name}//"
    held = HeldRoute(slots)

    async def run() -> None:
        transport = httpx.ASGITransport(app=held.gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client, \
                asyncio.timeout(60):
            first = [asyncio.create_task(client.get("/x")) for _ in range(2)]
            await held.both_in.wait()
            assert await slots.in_flight_everywhere() == 2  # counted in Redis, over TLS
            assert with_client_certs.cli("ZCARD", key).strip() == "2"  # seen by redis-cli too
            refused = await client.get("/x")
            assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
            assert held.entered == 2  # the refused request never reached the route
            held.release.set()
            assert [r.status_code for r in await asyncio.gather(*first)] == [200, 200]
            assert await slots.in_flight_everywhere() == 0  # released in Redis
            assert (await client.get("/x")).status_code == 200
        await store.aclose()

    asyncio.run(run())
    assert (store.failures, store.last_error, store.fallbacks) == (0, None, 0)
    assert with_client_certs.cli("ZCARD", key).strip() == "0"


@pytest.mark.parametrize("case", ["unknown CA", "other CA", "no client certificate"])
def test_tls_refused_fails_over_not_500(with_tls: SecureRedis, with_client_certs: SecureRedis, certs: Certs,
                                        case: str) -> None:
    server, query = {
        "unknown CA": (with_tls, ""),  # the system CAs do not know the private one
        "other CA": (with_tls, f"ssl_ca_certs={certs.other_ca}"),
        "no client certificate": (with_client_certs, f"ssl_ca_certs={certs.ca}"),
    }[case]
    credentials = ":s3cret@" if server is with_client_certs else ""
    stores = [RateLimitStore(server.uri(credentials, query=query), timeout=5, connect_timeout=10,
                             retry_interval=60, on_failure="closed") for _ in STRATEGIES]

    async def run() -> None:
        async with asyncio.timeout(60):
            for store, strategy in zip(stores, STRATEGIES, strict=True):
                responses = await statuses(limited(store, strategy, "tls")[0], 2)
                assert [r.status_code for r in responses] == [503, 503]
                assert responses[0].json()["code"] == "request_terminated"
            # RedisWire on its own fails the same way, with the TLS error
            wire = RedisWire(server.uri(credentials, query=query))
            with pytest.raises((ssl.SSLError, ConnectionError, RedisError)):
                async with asyncio.timeout(30):
                    await wire.incr_window("k", 60)
            wire.close()
        for store in stores:
            await store.aclose()

    asyncio.run(run())
    for store in stores:
        assert not store.healthy and store.last_error is not None
    if case != "no client certificate":  # the server hangs up on a missing certificate instead of saying why
        assert all("CERTIFICATE_VERIFY_FAILED" in str(store.last_error) for store in stores)


def test_tls_none_skips_verification(with_tls: SecureRedis) -> None:
    store = RateLimitStore(with_tls.uri(query="ssl_cert_reqs=none"), timeout=5, connect_timeout=10)
    assert_limited_in_redis(with_tls, store, "fixed-window")


# --- one configuration for both clients, checked at build time ------------------------------------------------------

@pytest.mark.parametrize("query", [
    "",
    "ssl_cert_reqs=none",
    "ssl_cert_reqs=optional",
    "ssl_cert_reqs=required&ssl_check_hostname=true",
    "ssl_check_hostname=yes",
    "ssl_check_hostname=false&ssl_ca_certs={ca}",
    "ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}",
])
def test_tls_context_as_coredis_builds_it(certs: Certs, query: str) -> None:
    from coredis.connection import RedisSSLContext

    query = query.format(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    params = dict(urllib.parse.parse_qsl(query))
    ours = tls_context(params)
    theirs = RedisSSLContext(params.get("ssl_keyfile"), params.get("ssl_certfile"), params.get("ssl_cert_reqs"),
                             params.get("ssl_ca_certs"),
                             None if "ssl_check_hostname" not in params else
                             params["ssl_check_hostname"] in ("true", "yes")).get()
    assert (ours.verify_mode, ours.check_hostname) == (theirs.verify_mode, theirs.check_hostname)
    assert ours.cert_store_stats() == theirs.cert_store_stats()


def test_bad_tls_settings_fail_at_build_time(certs: Certs, tmp_path: Path) -> None:
    port = free_port()
    base = f"rediss://127.0.0.1:{port}"
    for uri, options, message in [
        (f"{base}?ssl_ca_certs={tmp_path / 'missing.pem'}", {}, "No such file"),
        (f"{base}?ssl_cert_reqs=always", {}, "ssl_cert_reqs"),
        (f"{base}?ssl_certfile={certs.client_cert}", {}, "ssl_keyfile"),
        (base, {"ssl_ca_certs": str(certs.ca)}, "in the URI's query"),
        (f"redis://127.0.0.1:{port}?ssl_ca_certs={certs.ca}", {}, "rediss://"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            RateLimitStore(uri, options=options)
