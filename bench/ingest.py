"""Ingest benchmark: how close does one worker come to what the broker and the database can do?

Measured in one run, on one machine, against the same Mosquitto and PostgreSQL:

- ceiling "broker": N QoS 1 messages from ``mosquitto_pub -l`` to ``mosquitto_sub -C N``
  (Mosquitto's own C clients), messages/s;
- ceiling "COPY": the same readings COPYed (binary) into a plain table of the same shape in a
  throwaway database, rows/s;
- livelab: the worker (a real ``python -m ingest`` process) drains N messages that wait in its
  persistent session, until every reading is in TimescaleDB: messages/s and readings/s, and
  the ratios to the ceilings; plus the worker's peak memory (VmHWM).

Run: ``.venv/bin/python -m bench.ingest`` (``--help`` for options). Writes a JSON summary to
bench/results/. Figures vary with the machine's load: compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.common import ROOT, add_broker_arguments, broker_ceiling, log, mosquitto_pub, save_result
from schemas.migrate import migrate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def payload_lines(n: int, per_message: int) -> list[bytes]:
    """N form 2 payloads of `per_message` readings each, one per line for mosquitto_pub -l."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    lines = []
    for i in range(n):
        ts = (base + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        values = ",".join(f'"s{j}":{(i * 7 + j) % 1000 / 10}' for j in range(per_message))
        lines.append(f'{{"ts":"{ts}","values":{{{values}}}}}\n'.encode())
    return lines


def copy_ceiling(url: str, rows: int) -> float:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_copy (series_id int NOT NULL, time timestamptz NOT NULL, "
            "value double precision NOT NULL)"
        )
        data = [(i % 10, base + timedelta(seconds=i), float(i)) for i in range(rows)]
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY bench_copy (series_id, time, value) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int4", "timestamptz", "float8"])
            for row in data:
                copy.write_row(row)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    return rows / elapsed


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Worker:
    def __init__(self, env: dict[str, str], logfile: Path) -> None:
        self.env, self.logfile = env, logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest"], env=self.env, stdout=out, stderr=out, cwd=ROOT
            )
        url = f"http://127.0.0.1:{self.env['LIVELAB_INGEST_HTTP_PORT']}/ready"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"bench: worker did not become ready; see {self.logfile}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--messages", type=int, default=50_000, help="messages (default %(default)s)"
    )
    parser.add_argument(
        "--readings-per-message",
        type=int,
        default=1,
        help="readings in each message (default %(default)s)",
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "LIVELAB_TEST_DATABASE_URL", "postgresql://livelab:livelab@127.0.0.1:5432/postgres"
        ),
        help="server where a throwaway database is created (default %(default)s)",
    )
    add_broker_arguments(parser)
    args = parser.parse_args(argv)
    n, k = args.messages, args.readings_per_message
    lines = payload_lines(n, k)

    dbname = f"livelab_bench_{secrets.token_hex(3)}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    params = conninfo_to_dict(args.admin_url)
    params["dbname"] = dbname
    url = make_conninfo("", **params)
    lab = f"bench{secrets.token_hex(3)}"
    client_id = f"livelab-bench-{lab}"
    workdir = Path(tempfile.mkdtemp(prefix="livelab-bench-"))
    env = dict(
        os.environ,
        LIVELAB_DATABASE_URL=url,
        LIVELAB_MQTT_HOST=args.mqtt_host,
        LIVELAB_MQTT_PORT=str(args.mqtt_port),
        LIVELAB_INGEST_CLIENT_ID=client_id,
        LIVELAB_INGEST_TOPICS=f"livelab/{lab}/#",
        LIVELAB_INGEST_SESSION_EXPIRY="600",
        LIVELAB_INGEST_HTTP_PORT=str(free_port()),
        LIVELAB_LOG_LEVEL="WARNING",
    )
    worker = Worker(env, workdir / "worker.log")
    try:
        migrate(url)
        log(f"broker ceiling: {n} QoS 1 messages, mosquitto_pub -> mosquitto_sub")
        broker_rate = broker_ceiling(args.mqtt_host, args.mqtt_port, lines)
        log(f"COPY ceiling: {n * k} rows into a plain table")
        copy_rate = copy_ceiling(url, n * k)

        log("livelab: creating the worker's session, then queueing the messages in it")
        worker.start()
        worker.stop()
        mosquitto_pub(args.mqtt_host, args.mqtt_port, f"livelab/{lab}/bench-01/telemetry", lines)
        log("livelab: starting the worker and timing until every reading is stored")
        started = time.perf_counter()
        worker.start()
        assert worker.proc is not None
        with psycopg.connect(url, autocommit=True) as conn:
            last, last_change = -1, time.monotonic()
            while True:
                row = conn.execute("SELECT coalesce(sum(reading_count), 0) FROM series").fetchone()
                stored = int(row[0]) if row else 0
                if stored >= n * k:
                    break
                if stored != last:
                    last, last_change = stored, time.monotonic()
                elif time.monotonic() - last_change > 30:
                    raise SystemExit(
                        f"bench: stuck at {stored} of {n * k} readings; did the broker drop "
                        "queued messages (max_queued_messages)? See scripts/setup."
                    )
                time.sleep(0.02)
        elapsed = time.perf_counter() - started
        rss = peak_rss_mib(worker.proc.pid)
    finally:
        worker.stop()
        subprocess.run(
            [
                "mosquitto_sub",
                "-h",
                args.mqtt_host,
                "-p",
                str(args.mqtt_port),
                "-i",
                client_id,
                "-t",
                "x/none",
                "-E",
                "-x",
                "0",
            ],
            check=False,
            capture_output=True,
            timeout=10,
        )
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    msg_rate = n / elapsed
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": n,
        "readings_per_message": k,
        "broker_msgs_per_s": round(broker_rate),
        "copy_rows_per_s": round(copy_rate),
        "livelab_msgs_per_s": round(msg_rate),
        "livelab_readings_per_s": round(msg_rate * k),
        "ratio_msgs_to_broker": round(msg_rate / broker_rate, 3),
        "ratio_readings_to_copy": round(msg_rate * k / copy_rate, 3),
        "worker_peak_rss_mib": round(rss, 1),
        "cpus": os.cpu_count(),
    }
    save_result("ingest", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
