"""Prometheus metrics of a simulator process (``--metrics-port`` serves them at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

MESSAGES = Counter("livelab_sim_messages_published", "messages handed to the broker")
READINGS = Counter("livelab_sim_readings_published", "readings in the messages published")


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve the default registry on http://host:port/metrics (a daemon thread)."""
    start_http_server(port, addr=host)
