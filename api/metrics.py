"""Prometheus metrics of the API: requests by route template and status, latency, in-flight,
and the connection pool's statistics. Each app has its own registry (tests build many apps)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "livelab_api_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "livelab_api_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.in_flight = Gauge(
            "livelab_api_requests_in_flight",
            "HTTP requests being answered now.",
            registry=self.registry,
        )

    def watch_pool(self, get_pool: Callable[[], AsyncConnectionPool | None]) -> None:
        self.registry.register(_PoolCollector(get_pool))


class _PoolCollector(Collector):
    # psycopg_pool's get_stats() keys worth a gauge (the rest are counters since start).
    _GAUGES = ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting")
    _TOTALS = ("requests_num", "requests_errors", "connections_errors", "connections_lost")

    def __init__(self, get_pool: Callable[[], AsyncConnectionPool | None]) -> None:
        self._get_pool = get_pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self._get_pool()
        stats = pool.get_stats() if pool is not None else {}
        for key in self._GAUGES:
            yield GaugeMetricFamily(
                f"livelab_api_db_{key}", f"Connection pool statistic {key}.", stats.get(key, 0)
            )
        for key in self._TOTALS:
            yield GaugeMetricFamily(
                f"livelab_api_db_{key}",
                f"Connection pool statistic {key} (since the pool was opened).",
                stats.get(key, 0),
            )


class MetricsMiddleware:
    """Pure ASGI middleware (streaming responses pass straight through)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            # The template, never the raw path: lab names must not become label values.
            template = (
                route.path
                if isinstance(route, BaseRoute) and hasattr(route, "path")
                else "unmatched"
            )
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
