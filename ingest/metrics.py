"""Prometheus metrics of the ingest worker and its small HTTP endpoint.

``GET /health`` answers 200 while the process runs; ``GET /ready`` 200 when the worker is
subscribed, the database is writable and the writer keeps up, else 503 with the reason;
``GET /metrics`` the Prometheus text format.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger("livelab.ingest.http")


class Metrics:
    """The worker's metrics, in a registry of their own (one per worker)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "livelab_ingest_messages", "MQTT messages processed", ["outcome"], registry=r
        )
        self.readings = Counter(
            "livelab_ingest_readings", "readings by outcome", ["outcome"], registry=r
        )
        self.rejections = Counter(
            "livelab_ingest_rejections", "rejection records stored", registry=r
        )
        self.batches = Counter("livelab_ingest_batches", "database batches committed", registry=r)
        self.batch_seconds = Histogram(
            "livelab_ingest_batch_seconds",
            "time to store one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.db_retries = Counter(
            "livelab_ingest_db_retries", "batch attempts retried: database unavailable", registry=r
        )
        self.db_refused = Counter(
            "livelab_ingest_db_refused",
            "batches the database refused (split and retried)",
            registry=r,
        )
        self.db_outage = Gauge(
            "livelab_ingest_db_outage",
            "1 while the database cannot store (unreachable, refusing writes, misconfigured)",
            registry=r,
        )
        self.stale_dropped = Counter(
            "livelab_ingest_stale_dropped",
            "QoS 1 messages of an ended connection left to the broker's redelivery",
            registry=r,
        )
        self.redeliveries_matched = Counter(
            "livelab_ingest_redeliveries_matched",
            "redelivered receive-time messages given their first receive time (receipts)",
            registry=r,
        )
        self.rejections_trimmed = Counter(
            "livelab_ingest_rejections_trimmed",
            "rejection rows deleted by retention or the per-lab cap",
            registry=r,
        )
        self.acks = Counter("livelab_ingest_acks", "QoS 1 messages acknowledged", registry=r)
        self.acks_skipped = Counter(
            "livelab_ingest_acks_skipped",
            "acks not sent because the connection they belong to ended (broker redelivers)",
            registry=r,
        )
        self.connects = Counter("livelab_ingest_mqtt_connects", "MQTT connections made", registry=r)
        self.disconnects = Counter(
            "livelab_ingest_mqtt_disconnects", "MQTT connections lost or closed", registry=r
        )
        self.connected = Gauge(
            "livelab_ingest_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.queue_depth = Gauge(
            "livelab_ingest_queue_depth", "messages received and not yet stored", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve_http(
    host: str, port: int, metrics: Metrics, ready: Callable[[], tuple[bool, str]]
) -> ThreadingHTTPServer:
    """Start /health, /ready and /metrics on a daemon thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._send(200, "application/json", b'{"status": "ok"}')
            elif path == "/ready":
                ok, detail = ready()
                body = json.dumps({"status": "ready" if ok else "not ready", "detail": detail})
                self._send(200 if ok else 503, "application/json", body.encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, metrics.render())
            else:
                self._send(404, "application/json", b'{"detail": "not found"}')

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ingest-http", daemon=True)
    thread.start()
    return server
