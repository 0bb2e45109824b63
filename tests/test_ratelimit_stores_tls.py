"""Rate limit stores on Redis Cluster and Redis Sentinel over TLS, with a password: real redis-server processes.

The managed-Redis setup (TLS-only ports, AUTH) for the two topologies `limits` reaches through coredis'
cluster and Sentinel clients, whose TLS settings are options rather than URI query parameters:

- Cluster: ``redis+cluster://:pw@host:port,...`` with ``options={"ssl_context": context}`` (or
  ``{"ssl": True, "ssl_ca_certs": path}``); the URI's query is not read.
- Sentinel: ``redis+sentinel://:pw@host:port/service`` with ``options={"ssl_context": context,
  "sentinel_kwargs": {"ssl_context": context}}``: the first for the primary, the second for the Sentinels.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_ratelimit_redis_secure import LIMIT, STRATEGIES, HeldRoute, _key_and_cert, limited, statuses

from asgigate import ConcurrencyLimit, ConfigurationError
from asgigate.policies.ratelimit import RateLimitStore

from servers import free_port, wait_port, wait_until_async

# coredis 5.7's Cluster and Sentinel clients over TLS sometimes leave the plain TCP connection of a TLS handshake
# they gave up on (the race `connected` below describes) unclosed, with no handle of ours to close it: the garbage
# collector's ResourceWarning about such a socket is not an error here. Nothing else is let through: the stores'
# own connections are closed by `aclose()` in every test, and any other warning is an error.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <(socket\.socket fd|function _SelectorTransport\.__del__):"
    "pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def collect_abandoned_sockets() -> Iterator[None]:
    yield
    gc.collect()  # reported here, under this module's filter, rather than in whichever test collects them later


PASSWORD = "tls-s3cret"  # the default user's (requirepass, masterauth, Sentinel's auth-pass)
EDGE_PASSWORD = "p@ss:w/rd%"  # an ACL user's, with characters a URI must percent-encode
EDGE = f"edge:{urllib.parse.quote(EDGE_PASSWORD, safe='')}@"
SERVICE = "asgigate"
TIMING = {"timeout": 5, "connect_timeout": 5, "retry_interval": 0.2}


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path  # a CA that signed none of these

    def context(self, ca: Path | None = None) -> ssl.SSLContext:
        """What a user builds: the private CA, the server's name (127.0.0.1 here) checked."""
        return ssl.create_default_context(cafile=str(ca or self.ca))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("redis-tls-topologies")
    ca = _key_and_cert(directory, "ca", None, [])
    _key_and_cert(directory, "server", ca, ["localhost", "127.0.0.1"])
    _key_and_cert(directory, "other-ca", None, [])
    return Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "other-ca.pem")


class TlsProcesses:
    """redis-server processes on TLS-only ports, killed by PID at the end; their logs kept for a failed start."""

    def __init__(self, certs: Certs) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.certs = certs
        self.dir = Path(tempfile.mkdtemp(prefix="asgigate-tls-stores-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def tls(self, port: int) -> list[str]:
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.certs.server_cert),
                "--tls-key-file", str(self.certs.server_key), "--tls-ca-cert-file", str(self.certs.ca),
                "--tls-auth-clients", "no", "--tls-replication", "yes"]

    def spawn(self, port: int, *args: str) -> None:
        log = self.dir / f"{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*args, "--logfile", ""], cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        try:
            wait_port(port, 20, proc)
        except RuntimeError:
            text = log.read_text(errors="replace")
            if "TLS" in text and "not" in text.lower() and "support" in text.lower():
                pytest.skip(f"this redis-server has no TLS support: {text.strip()[-200:]}")
            raise RuntimeError(f"redis-server on {port} exited: {text[-2000:]}") from None
        self.wait(lambda: self.cli(port, "PING").strip() == "PONG", f"redis on {port}")

    def cli(self, port: int, *args: str, cluster: bool = False) -> str:
        """redis-cli over TLS with the test CA and the password: a client independent of the code under test."""
        command = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--tls", "--cacert", str(self.certs.ca),
                   "-a", PASSWORD, "--no-auth-warning", *(["-c"] if cluster else []), *args]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
        except subprocess.TimeoutExpired:
            return ""

    @staticmethod
    def wait(check: Any, what: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _user(*args: str) -> list[str]:
    return ["--user", "edge", "on", f">{EDGE_PASSWORD}", "~*", "&*", "+@all", *args]


class TlsCluster(TlsProcesses):
    """Three primaries, client and cluster bus on TLS, requirepass and an ACL user on every node."""

    def __init__(self, certs: Certs) -> None:
        super().__init__(certs)
        self.ports = [free_port() for _ in range(3)]

    def uri(self, credentials: str = f":{PASSWORD}@") -> str:
        return f"redis+cluster://{credentials}" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> TlsCluster:
        for port in self.ports:
            self.spawn(port, self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       *self.tls(port), "--tls-cluster", "yes", "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                       *_user(), "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                       "--cluster-port", str(free_port()))
        subprocess.run(["redis-cli", "--tls", "--cacert", str(self.certs.ca), "-a", PASSWORD, "--no-auth-warning",
                        "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        for port in self.ports:
            self.wait(lambda port=port: "cluster_state:ok" in self.cli(port, "CLUSTER", "INFO")
                      and self.cli(port, "CLUSTER", "NODES").count("master") == 3, "the TLS cluster")
        return self

    def keys(self, pattern: str) -> dict[str, int]:
        """The keys matching `pattern` on every node: {key: port of its node}."""
        return {key: port for port in self.ports for key in self.cli(port, "--scan", "--pattern", pattern).split()}


class TlsSentinel(TlsProcesses):
    """A primary and a Sentinel, both on TLS only and wanting a password; the Sentinel reaches the primary over TLS."""

    def __init__(self, certs: Certs) -> None:
        super().__init__(certs)
        self.primary_port = free_port()
        self.port = free_port()

    def uri(self, credentials: str = f":{PASSWORD}@") -> str:
        return f"redis+sentinel://{credentials}127.0.0.1:{self.port}/{SERVICE}"

    def start(self) -> TlsSentinel:
        self.spawn(self.primary_port, self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   *self.tls(self.primary_port), "--requirepass", PASSWORD, "--masterauth", PASSWORD, *_user())
        config = self.dir / "sentinel.conf"  # Sentinel rewrites its config file: a fresh writable one
        tls = self.tls(self.port)
        config.write_text(
            "".join(f"{tls[i].removeprefix('--')} {tls[i + 1]}\n" for i in range(0, len(tls), 2))
            + f"bind 127.0.0.1\ndir {self.dir}\nrequirepass {PASSWORD}\n"
            + f"user edge on >{EDGE_PASSWORD} ~* &* +@all\n"
            + f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 1\n"
            + f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
            + f"sentinel down-after-milliseconds {SERVICE} 60000\n")
        self.spawn(self.port, self.binary, str(config), "--sentinel")

        def primary_seen() -> bool:  # the Sentinel has talked to the primary over TLS, with the password
            reply = self.cli(self.port, "SENTINEL", "MASTER", SERVICE).split("\n")
            fields = dict(zip(reply[::2], reply[1::2], strict=False))
            return (fields.get("port") == str(self.primary_port) and fields.get("flags") == "master"
                    and fields.get("role-reported") == "master" and int(fields.get("info-refresh", 10**9)) < 60000)

        self.wait(primary_seen, "Sentinel's view of the TLS primary")
        return self


@pytest.fixture(scope="module")
def cluster(certs: Certs) -> Iterator[TlsCluster]:
    servers = TlsCluster(certs)
    try:
        yield servers.start()
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def sentinel(certs: Certs) -> Iterator[TlsSentinel]:
    servers = TlsSentinel(certs)
    try:
        yield servers.start()
    finally:
        servers.stop()


def cluster_store(cluster: TlsCluster, certs: Certs, credentials: str = f":{PASSWORD}@",
                  ca: Path | None = None, **settings: Any) -> RateLimitStore:
    settings.setdefault("options", {"ssl_context": certs.context(ca)})
    return RateLimitStore(cluster.uri(credentials), **{**TIMING, **settings})


def sentinel_store(sentinel: TlsSentinel, certs: Certs, credentials: str = f":{PASSWORD}@",
                   ca: Path | None = None, **settings: Any) -> RateLimitStore:
    context = certs.context(ca)
    settings.setdefault("options", {"ssl_context": context, "sentinel_kwargs": {"ssl_context": context}})
    return RateLimitStore(sentinel.uri(credentials), **{**TIMING, **settings})


async def _nothing(storage: object) -> None:
    return None


async def connected(store: RateLimitStore) -> tuple[int, int]:
    """Connect and load the scripts before the asserted requests; (failures, fallbacks) so far.

    coredis 5.7's first connection over TLS rarely fails on its own: a connection lost during its HELLO is
    reconnected under the lock connect already holds (a deadlock, cut by connect_timeout), or a handshake reply
    is not what it asserts. The store then goes down like on any failure and its probe connects afresh: that
    is waited for here, so the assertions that follow are about TLS and passwords, not that race.
    """
    if not (await store.call(_nothing))[1]:
        await wait_until_async(lambda: store.healthy, within=20)
    assert store.healthy, store.last_error
    return store.failures, store.fallbacks


async def accepted(store: RateLimitStore) -> bool:
    """Whether the store's credentials are accepted (its first connection and, after the rare race, its probe's)."""
    try:
        async with asyncio.timeout(60):
            if not (await store.call(_nothing))[1] and "username-password" not in str(store.last_error):
                await wait_until_async(lambda: store.healthy or "username-password" in str(store.last_error), 20)
            return store.healthy
    finally:
        await store.aclose()


def limited_here(store: RateLimitStore, strategy: str, name: str) -> None:
    """LIMIT admitted, then 429 problem+json; every decision made in the store; the store closed after."""
    gateway, policy = limited(store, strategy, name)

    async def run() -> None:
        try:
            async with asyncio.timeout(60):
                before = await connected(store)
                responses = await statuses(gateway, LIMIT + 2)
                assert [r.status_code for r in responses] == [200] * LIMIT + [429] * 2
                assert responses[-1].headers["content-type"] == "application/problem+json"
                assert responses[-1].json()["code"] == "rate_limited"
                (usage,) = await policy.usage("/x")
                assert usage.remaining == 0
                assert (store.failures, store.fallbacks) == before  # every decision made in the store
        finally:
            await store.aclose()

    asyncio.run(run())
    assert store.healthy and store.wire is None  # not a standalone Redis: limits' client alone


def assert_counted(cli: Any, port: int, key: str, strategy: str) -> None:
    if strategy == "fixed-window":  # every hit is counted, the refused ones too
        assert cli(port, "GET", key).strip() == str(LIMIT + 2)
    else:  # one entry per admitted hit
        assert cli(port, "LLEN", key).strip() == str(LIMIT)


# --- Cluster -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cluster_over_tls_with_a_password(cluster: TlsCluster, certs: Certs, strategy: str) -> None:
    store = cluster_store(cluster, certs)
    assert PASSWORD not in repr(store) and PASSWORD not in store.display()
    name = f"cluster-{strategy}-{time.time_ns()}"
    limited_here(store, strategy, name)
    keys = cluster.keys(f"LIMITS:*{name}*")
    assert len(keys) == 1, keys
    ((key, port),) = keys.items()
    assert_counted(cluster.cli, port, key, strategy)


def test_cluster_tls_from_ssl_options(cluster: TlsCluster, certs: Certs) -> None:
    """coredis' own TLS options (no SSLContext to build): ssl=True and the CA file."""
    store = cluster_store(cluster, certs, options={"ssl": True, "ssl_ca_certs": str(certs.ca),
                                                   "ssl_check_hostname": True})
    limited_here(store, "fixed-window", f"cluster-options-{time.time_ns()}")


def test_cluster_acl_user_as_options(cluster: TlsCluster, certs: Certs) -> None:
    store = cluster_store(cluster, certs, credentials="",
                          options={"ssl_context": certs.context(), "username": "edge", "password": EDGE_PASSWORD})
    limited_here(store, "moving-window", f"cluster-acl-{time.time_ns()}")


def test_cluster_percent_encoded_password_in_the_uri(cluster: TlsCluster, certs: Certs) -> None:
    store = cluster_store(cluster, certs, credentials=EDGE)
    assert asyncio.run(accepted(store)), store.last_error


def test_concurrency_limit_on_the_tls_cluster(cluster: TlsCluster, certs: Certs) -> None:
    store = cluster_store(cluster, certs)
    name = f"slots{time.time_ns()}"
    slots = ConcurrencyLimit(2, store=store, name=name)
    key = f"LIMITS:asgigate-concurrency/{name}//"
    held = HeldRoute(slots)

    async def run() -> None:
        transport = httpx.ASGITransport(app=held.gateway)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client, \
                    asyncio.timeout(60):
                before = await connected(store)
                first = [asyncio.create_task(client.get("/x")) for _ in range(2)]
                await held.both_in.wait()
                assert await slots.in_flight_everywhere() == 2  # counted in the cluster, over TLS
                assert cluster.cli(cluster.ports[0], "ZCARD", key, cluster=True).strip() == "2"
                refused = await client.get("/x")
                assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
                assert held.entered == 2  # the refused request never reached the route
                held.release.set()
                assert [r.status_code for r in await asyncio.gather(*first)] == [200, 200]
                assert await slots.in_flight_everywhere() == 0  # released in the cluster
                assert (await client.get("/x")).status_code == 200
                assert (store.failures, store.fallbacks) == before
        finally:
            await store.aclose()

    asyncio.run(run())
    assert cluster.cli(cluster.ports[0], "ZCARD", key, cluster=True).strip() == "0"


# --- Sentinel ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sentinel_over_tls_with_a_password(sentinel: TlsSentinel, certs: Certs, strategy: str) -> None:
    store = sentinel_store(sentinel, certs)
    assert PASSWORD not in repr(store) and PASSWORD not in store.display()
    name = f"sentinel-{strategy}-{time.time_ns()}"
    limited_here(store, strategy, name)
    keys = sentinel.cli(sentinel.primary_port, "--scan", "--pattern", f"LIMITS:*{name}*").split()
    assert len(keys) == 1, keys
    assert_counted(sentinel.cli, sentinel.primary_port, keys[0], strategy)


def test_sentinel_acl_user_as_options(sentinel: TlsSentinel, certs: Certs) -> None:
    """Options' credentials go to the Sentinel and to the primary alike, as the URI's do."""
    context = certs.context()
    store = sentinel_store(sentinel, certs, credentials="",
                           options={"ssl_context": context, "sentinel_kwargs": {"ssl_context": context},
                                    "username": "edge", "password": EDGE_PASSWORD})
    limited_here(store, "fixed-window", f"sentinel-acl-{time.time_ns()}")


def test_sentinel_credentials_of_its_own(sentinel: TlsSentinel, certs: Certs) -> None:
    """The Sentinel's credentials apart from the primary's: sentinel_kwargs' override the URI's for the Sentinels."""
    context = certs.context()
    store = sentinel_store(sentinel, certs, options={
        "ssl_context": context,
        "sentinel_kwargs": {"ssl_context": context, "username": "edge", "password": EDGE_PASSWORD}})
    limited_here(store, "moving-window", f"sentinel-own-{time.time_ns()}")
    # the same with a password the Sentinel refuses: it is these credentials, not the URI's, that reach it
    refused = sentinel_store(sentinel, certs, on_failure="closed", options={
        "ssl_context": context,
        "sentinel_kwargs": {"ssl_context": context, "username": "edge", "password": "wrong"}})

    async def run() -> list[int]:
        try:
            async with asyncio.timeout(60):
                gateway = limited(refused, "moving-window", f"sentinel-refused-{time.time_ns()}")[0]
                codes = [r.status_code for r in await statuses(gateway, 2)]
                await wait_until_async(lambda: "username-password" in str(refused.last_error))  # see connected()
                return codes
        finally:
            await refused.aclose()

    assert asyncio.run(run()) == [503, 503]
    assert refused.last_error is not None and "username-password" in refused.last_error, refused.last_error


def test_sentinel_percent_encoded_password_in_the_uri(sentinel: TlsSentinel, certs: Certs) -> None:
    store = sentinel_store(sentinel, certs, credentials=EDGE)
    assert asyncio.run(accepted(store)), store.last_error


# --- refused: a wrong password, an unknown CA, TLS settings where they are not read ---------------------------------

@pytest.mark.parametrize(("topology", "case"), [
    ("cluster", "wrong password"),
    ("cluster", "unknown CA"),
    ("sentinel", "wrong password"),
    ("sentinel", "unknown CA"),
    ("sentinel", "no TLS to the Sentinel"),
])
def test_refused_fails_over_not_500(cluster: TlsCluster, sentinel: TlsSentinel, certs: Certs, topology: str,
                                    case: str, caplog: pytest.LogCaptureFixture) -> None:
    """The store goes down at the first call, says why once (never the password), and on_failure decides."""
    caplog.set_level(logging.WARNING, "asgigate.ratelimit")
    credentials = ":wrong-s3cret@" if case == "wrong password" else f":{PASSWORD}@"
    ca = certs.other_ca if case == "unknown CA" else None

    def store(on_failure: str) -> RateLimitStore:
        settings: dict[str, Any] = {"on_failure": on_failure}
        if case == "no TLS to the Sentinel":  # the primary's TLS context alone: Sentinels are then reached in clear
            settings["options"] = {"ssl_context": certs.context()}
        if topology == "cluster":
            return cluster_store(cluster, certs, credentials, ca, **settings)
        return sentinel_store(sentinel, certs, credentials, ca, **settings)

    if case == "wrong password":
        reason = "invalid username-password pair"
    elif topology == "cluster":
        reason = "CERTIFICATE_VERIFY_FAILED"
    else:  # coredis tries each Sentinel and drops their connection errors: only this is left to say
        reason = f"PrimaryNotFoundError: No primary found for {SERVICE!r}"
    closed, local = store("closed"), store("local")
    run_id = f"refused{time.time_ns()}"

    async def run() -> None:
        try:
            async with asyncio.timeout(60):  # never a hang
                for strategy in STRATEGIES:
                    gateway = limited(closed, strategy, f"closed-{run_id}")[0]
                    refused = await statuses(gateway, 2)
                    assert [r.status_code for r in refused] == [503, 503]
                    assert refused[0].headers["content-type"] == "application/problem+json"
                    assert refused[0].json()["code"] == "request_terminated"
                    assert refused[0].headers["retry-after"] == "1"
                gateway = limited(local, "fixed-window", f"local-{run_id}")[0]
                assert [r.status_code for r in await statuses(gateway, LIMIT + 1)] == [200] * LIMIT + [429]
                # the probe keeps trying and records why it fails (see connected() for a rare first failure)
                for made in (closed, local):
                    await wait_until_async(lambda made=made: reason in str(made.last_error))
        finally:
            await closed.aclose()
            await local.aclose()

    asyncio.run(run())
    for made in (closed, local):
        assert not made.healthy and made.outages == 1 and made.failures == 1  # the probe's attempts do not count
        assert made.last_error is not None and reason in made.last_error, made.last_error
    warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once per store, not once per request
    assert all(PASSWORD not in w and "wrong-s3cret" not in w for w in warnings), warnings
    nodes = cluster.ports if topology == "cluster" else [sentinel.primary_port]
    assert all(sentinel.cli(port, "--scan", "--pattern", f"*{run_id}*").split() == [] for port in nodes)


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_tls_settings_in_the_query_refused_at_build_time(cluster: TlsCluster, sentinel: TlsSentinel,
                                                          certs: Certs, topology: str) -> None:
    uri = (cluster if topology == "cluster" else sentinel).uri() + f"?ssl_ca_certs={certs.ca}"
    with pytest.raises(ConfigurationError, match="ssl_ca_certs"):
        RateLimitStore(uri)


def test_sentinel_ssl_file_options_refused_at_build_time(sentinel: TlsSentinel, certs: Certs) -> None:
    with pytest.raises(ConfigurationError, match="ssl_ca_certs"):
        RateLimitStore(sentinel.uri(), options={"ssl_ca_certs": str(certs.ca)})
