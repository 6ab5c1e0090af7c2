"""``livelab-ingest``: run one ingest worker until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from pydantic import ValidationError

from ingest.settings import Settings
from schemas.migrate import MigrationError


def _settings_help() -> str:
    lines = ["configuration (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default is not None else "(unset)"
        desc = f" -- {field.description}" if field.description else ""
        lines.append(f"  LIVELAB_{name.upper()} (default {default}){desc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livelab-ingest",
        description="Ingest worker: subscribes to livelab/{lab}/{device}/telemetry and /senml at "
        "QoS 1 with a persistent session, validates each message, stores readings and "
        "rejections in TimescaleDB, and acknowledges a message only after it is committed. "
        "Serves /health, /ready and /metrics on LIVELAB_INGEST_HTTP_PORT.",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check-config", action="store_true", help="print the effective settings and exit"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="run N worker processes in one share group (client ids CLIENT_ID-1..N, HTTP "
        "ports HTTP_PORT..HTTP_PORT+N-1); one process uses about one core (default: "
        "LIVELAB_INGEST_PROCESSES, 1)",
    )
    args = parser.parse_args(argv)
    if args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"livelab-ingest: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.check_config:
        for name, value in settings.model_dump().items():
            print(f"LIVELAB_{name.upper()}={value}")
        return 0

    processes = settings.ingest_processes if args.processes is None else args.processes
    if processes > 1:
        from ingest.processes import supervise

        return supervise(settings, processes)

    from ingest.worker import Stopped, Worker  # after logging is configured

    stop = threading.Event()
    worker = Worker(settings)

    def on_signal(*_: object) -> None:
        stop.set()
        worker.request_stop()  # also while start() still waits for the database

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        worker.start()
    except Stopped:
        logging.getLogger("livelab.ingest").info("stopped before the worker had started")
        return 0
    except MigrationError as exc:
        logging.getLogger("livelab.ingest").error("%s", exc)
        return 1
    while not stop.wait(1.0):
        if worker.failed.is_set():
            worker.stop(grace=0)
            return 70  # EX_SOFTWARE: an internal error; restart the worker
    worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
