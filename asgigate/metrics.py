"""Metrics: request counters and latency histograms in Prometheus' text format, cheap enough for every request.

    class Edge(Gateway):
        def __init__(self) -> None:
            super().__init__(metrics=Metrics())

        def routes(self):
            return [Route("/metrics", self.metrics.endpoint()), ...]

Every finished request adds to `asgigate_requests_total{route,method,status,reason}` and to the duration
histograms; policies add their own series with `counter()` / `gauge()` / `histogram()`. A sample is a dict
update in the worker (no locks: one event loop per worker). With several worker processes, give every worker the
same `shared_dir`: each one writes its figures there, and a scrape of any worker answers with the sum of all.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ._frozen import Frozen
from .errors import ConfigurationError, MethodNotAllowed
from .targets.base import Target

if TYPE_CHECKING:
    from .exchange import Exchange
    from .types import Receive, Send

__all__ = ["Counter", "Gauge", "Histogram", "Metrics"]

LabelValues = tuple[str, ...]

# Seconds. Finer than Prometheus' defaults at the low end: a gateway's own work is sub-millisecond.
DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Methods a client cannot invent: anything else is counted as OTHER, so label values stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "WS"})

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_:" for c in name) or name[0].isdigit():
        raise ConfigurationError(f"{name!r} is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*).")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric(ABC):
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        _check_name(name)
        for label in labels:
            _check_name(label)
        self.name = name
        self.help = help
        self.label_names = tuple(labels)

    @abstractmethod
    def snapshot(self) -> list[Any]:
        """This worker's values, as JSON-able rows."""

    @abstractmethod
    def merge(self, total: dict[LabelValues, Any], rows: Iterable[Any]) -> None:
        """Add rows (from a snapshot) into `total`."""

    @abstractmethod
    def lines(self, values: dict[LabelValues, Any]) -> list[str]:
        """The exposition lines of the summed values."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, labels={list(self.label_names)})"


class Counter(_Metric):
    """A monotonically increasing count per label values: ``counter.inc("local_rate_limited")``.

    With `read`, values are also read at each scrape: ``read()`` returns a mapping of label values to numbers,
    so figures a component keeps anyway cost nothing more per request. Every `read` given for the same series
    adds to it (several rate limit policies, one series).
    """

    kind = "counter"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (),
        read: Callable[[], Mapping[LabelValues, float]] | None = None,
    ) -> None:
        super().__init__(name, help, labels)
        self.values: dict[LabelValues, float] = {}
        self.reads = [read] if read is not None else []

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def snapshot(self) -> list[Any]:
        if not self.reads:
            return [[list(k), v] for k, v in self.values.items()]
        values = dict(self.values)
        for read in self.reads:
            for key, value in read().items():
                values[key] = values.get(key, 0.0) + float(value)
        return [[list(k), v] for k, v in values.items()]

    def merge(self, total: dict[LabelValues, Any], rows: Iterable[Any]) -> None:
        for key, value in rows:
            k = tuple(key)
            total[k] = total.get(k, 0.0) + value

    def lines(self, values: dict[LabelValues, Any]) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(values.items())]


class Gauge(Counter):
    """A value that goes up and down (in flight, healthy); across workers the values are summed."""

    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        self.values[labels] = value

    def dec(self, *labels: str, amount: float = 1.0) -> None:
        self.inc(*labels, amount=-amount)


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count (seconds, by convention)."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        super().__init__(name, help, labels)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or len(set(bounds)) != len(bounds) or not all(math.isfinite(b) for b in bounds):
            raise ConfigurationError(f"{name}: buckets must be distinct finite numbers, got {list(buckets)!r}.")
        self.bounds = tuple(bounds)
        # per label values: a count per bucket (+Inf last), then the sum
        self.values: dict[LabelValues, list[float]] = {}

    def observe(self, value: float, *labels: str) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def count(self, *labels: str) -> int:
        row = self.values.get(labels)
        return int(sum(row[:-1])) if row else 0

    def snapshot(self) -> list[Any]:
        return [[list(k), v] for k, v in self.values.items()]

    def merge(self, total: dict[LabelValues, Any], rows: Iterable[Any]) -> None:
        for key, row in rows:
            k = tuple(key)
            into = total.get(k)
            if into is None:
                total[k] = list(row)
            else:
                for i, value in enumerate(row):
                    into[i] += value

    def lines(self, values: dict[LabelValues, Any]) -> list[str]:
        out = []
        names = self.label_names
        for key, row in sorted(values.items()):
            cumulative = 0.0
            for bound, count in zip((*self.bounds, math.inf), row[:-1], strict=True):
                cumulative += count
                le = 'le="' + _number(bound) + '"'
                out.append(f"{self.name}_bucket{_labels(names, key, le)} {_number(cumulative)}")
            out.append(f"{self.name}_sum{_labels(names, key)} {_number(row[-1])}")
            out.append(f"{self.name}_count{_labels(names, key)} {_number(cumulative)}")
        return out


class Metrics:
    """The gateway's metrics registry and its Prometheus endpoint.

    - `prefix`: the start of every built-in series name (`asgigate_requests_total`, ...).
    - `buckets`: histogram bounds in seconds for the request and upstream durations.
    - `shared_dir`: a directory all worker processes of one gateway share (e.g. under /run or a tmpfs): each
      writes its figures there at most every `share_interval` seconds and at every scrape, and a scrape adds up
      every worker's latest figures. Files of workers gone for more than `stale_after` seconds are removed.
    """

    def __init__(
        self,
        *,
        prefix: str = "asgigate",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        shared_dir: str | os.PathLike[str] | None = None,
        share_interval: float = 1.0,
        stale_after: float = 300.0,
    ) -> None:
        self.prefix = prefix
        self._metrics: dict[str, _Metric] = {}
        self._owners: dict[int, object] = {}
        p = prefix + "_" if prefix else ""
        self.requests = self.counter(
            f"{p}requests_total",
            "Requests finished, by route, method, status and the reason of a reply the gateway made itself.",
            ["route", "method", "status", "reason"],
        )
        self.duration = self.histogram(
            f"{p}request_duration_seconds", "Time from the request's arrival to the end of its response.",
            ["route"], buckets,
        )
        self.upstream_duration = self.histogram(
            f"{p}upstream_response_seconds", "Time until the upstream's response head arrived.",
            ["upstream"], buckets,
        )
        self.in_flight = self.gauge(f"{p}requests_in_flight", "Requests being served now.")
        self.bytes_sent = self.counter(f"{p}response_bytes_total", "Response body bytes sent, by route.", ["route"])
        self.shared_dir = Path(shared_dir) if shared_dir is not None else None
        self.share_interval = share_interval
        self.stale_after = stale_after
        self._shared_at = 0.0
        if self.shared_dir is not None:
            self.shared_dir.mkdir(parents=True, exist_ok=True)

    # --- registry ----------------------------------------------------------------------------------------------

    def _register(self, metric: _Metric) -> Any:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            if type(existing) is not type(metric) or existing.label_names != metric.label_names:
                raise ConfigurationError(f"Metric {metric.name!r} is already registered as {existing!r}.")
            if isinstance(existing, Counter) and isinstance(metric, Counter):
                existing.reads.extend(metric.reads)
            return existing
        self._metrics[metric.name] = metric
        return metric

    def counter(
        self, name: str, help: str, labels: Sequence[str] = (),
        read: Callable[[], Mapping[LabelValues, float]] | None = None,
    ) -> Counter:
        """A counter; asking again for the same name and labels returns the same one. See `Counter` for `read`."""
        result: Counter = self._register(Counter(name, help, labels, read))
        return result

    def gauge(
        self, name: str, help: str, labels: Sequence[str] = (),
        read: Callable[[], Mapping[LabelValues, float]] | None = None,
    ) -> Gauge:
        result: Gauge = self._register(Gauge(name, help, labels, read))
        return result

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        result: Histogram = self._register(Histogram(name, help, labels, buckets))
        return result

    def __getitem__(self, name: str) -> _Metric:
        return self._metrics[name]

    def first_time(self, owner: object) -> bool:
        """True the first time it is asked about `owner`: for components shared by several policies (a store)
        that must register their series once."""
        if id(owner) in self._owners:
            return False
        self._owners[id(owner)] = owner  # kept alive, so its id is not reused
        return True

    # --- recording (the gateway calls this) -------------------------------------------------------------------

    def finished(self, exchange: Exchange) -> None:
        """Record one finished request (called by the gateway after the response, errors included)."""
        # Inlined dict updates: this runs for every request.
        flight = self.in_flight.values
        flight[()] = flight.get((), 0.0) - 1.0
        route = exchange.route.name if exchange.route is not None else ""
        method = exchange.scope.get("method", "WS")
        if method not in _METHODS:
            method = "OTHER"
        key = (route, method, str(exchange.status), exchange.reason or "")
        counts = self.requests.values
        counts[key] = counts.get(key, 0.0) + 1.0
        self.duration.observe(time.perf_counter() - exchange.started_at, route)
        if exchange.upstream_ms is not None and exchange.upstream is not None:
            self.upstream_duration.observe(exchange.upstream_ms / 1000.0, exchange.upstream)
        if exchange.bytes_sent:
            sent = self.bytes_sent.values
            sent[route,] = sent.get((route,), 0.0) + exchange.bytes_sent
        if self.shared_dir is not None and exchange.started_at - self._shared_at > self.share_interval:
            self.share()

    # --- exposition -------------------------------------------------------------------------------------------

    def share(self) -> None:
        """Write this worker's figures into `shared_dir` (atomically: a reader never sees half a file)."""
        if self.shared_dir is None:
            return
        self._shared_at = time.perf_counter()
        data = orjson.dumps({name: m.snapshot() for name, m in self._metrics.items()})
        path = self.shared_dir / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def _collect(self) -> dict[str, dict[LabelValues, Any]]:
        totals: dict[str, dict[LabelValues, Any]] = {name: {} for name in self._metrics}
        if self.shared_dir is None:
            for name, metric in self._metrics.items():
                metric.merge(totals[name], metric.snapshot())
            return totals
        self.share()
        now = time.time()
        for path in self.shared_dir.glob("*.json"):
            try:
                if now - path.stat().st_mtime > self.stale_after and path.stem != str(os.getpid()):
                    path.unlink(missing_ok=True)
                    continue
                worker = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker replacing its file right now, or gone
            for name, rows in worker.items():
                known = self._metrics.get(name)
                if known is not None:
                    known.merge(totals[name], rows)
        return totals

    def render(self) -> bytes:
        """Every series in the Prometheus text exposition format (version 0.0.4)."""
        totals = self._collect()
        lines: list[str] = []
        for name, metric in self._metrics.items():
            lines.append(f"# HELP {name} {metric.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            lines.append(f"# TYPE {name} {metric.kind}")
            lines.extend(metric.lines(totals[name]))
        return ("\n".join(lines) + "\n").encode()

    def endpoint(self) -> Target:
        """A route target answering with `render()`: ``Route("/metrics", self.metrics.endpoint())``."""
        return MetricsEndpoint(self.render)

    def __repr__(self) -> str:
        return f"Metrics(prefix={self.prefix!r}, series={len(self._metrics)})"


class MetricsEndpoint(Frozen, Target):
    """The Prometheus scrape target: GET/HEAD only (other methods are the route table's 405)."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        if exchange.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(["GET", "HEAD"])
        body = self.render()
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if exchange.method == "HEAD" else body})

    def __repr__(self) -> str:
        return "MetricsEndpoint()"
