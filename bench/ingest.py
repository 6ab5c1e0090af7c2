"""Ingest benchmark: live publishers against the worker, beside the ceilings of the same run.

What users see when they point devices at livelab, measured in one run on one machine against
the same Mosquitto and PostgreSQL:

- **ceiling, broker**: ten ``mosquitto_pub -l`` QoS 1 publishers started together, each sending
  its messages, received by ``mosquitto_sub`` (Mosquitto's own C clients): messages/s.
- **livelab, single readings**: the same ten publishers, started with the clock, publishing
  single-reading form 2 messages to a running worker (``python -m ingest``, 1 process, then
  ``--processes 2``); the time until every reading is committed, readings/s and the ratio to the
  broker ceiling.
- **livelab, 100 readings per message**: the same with 100-reading messages, beside
  **ceiling, COPY**: the same rows COPYed (binary) into the same ``readings`` hypertable with
  its primary key, rows/s.
- **latency**: publish-to-committed p50 and p99 of single readings sent at half the sustained
  single-reading rate (ten paced publishers; each reading carries its send time as ``ts``).
- each worker's peak RSS (VmHWM) and CPU microseconds per reading.

Run: ``.venv/bin/python -m bench.ingest`` (``--help`` for the sizes). It uses a database of its
own (created and dropped) and its own topics. Writes a JSON summary to bench/results/. The
machine is shared and noisy: compare the ratios of one run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.common import (
    ROOT,
    Subscriber,
    add_broker_arguments,
    log,
    mosquitto_pub_command,
    mqtt_login_args,
    mqtt_login_env,
    save_result,
    scratch_database,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def payload_lines(n: int, per_message: int, offset: int = 0) -> bytes:
    """N form 2 payloads of `per_message` readings each, one per line for mosquitto_pub -l."""
    lines = []
    for i in range(offset, offset + n):
        ts = (BASE + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        values = ",".join(f'"s{j}":{(i * 7 + j) % 1000 / 10}' for j in range(per_message))
        lines.append(f'{{"ts":"{ts}","values":{{{values}}}}}\n')
    return "".join(lines).encode()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publishers(host: str, port: int, topics: list[str], inputs: list[bytes]) -> float:
    """Start one ``mosquitto_pub -l`` per topic at once; returns when all exited (monotonic)."""
    procs = [
        subprocess.Popen(
            mosquitto_pub_command(host, port, topic),
            stdin=subprocess.PIPE,
        )
        for topic in topics
    ]
    feeders = [
        threading.Thread(target=_feed, args=(proc, data), daemon=True)
        for proc, data in zip(procs, inputs, strict=True)
    ]
    for f in feeders:
        f.start()
    for f in feeders:
        f.join()
    for proc in procs:
        if proc.wait(300) != 0:
            raise SystemExit("bench: a mosquitto_pub failed")
    return time.monotonic()


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Ingest:
    """``python -m ingest [--processes N]`` for one lab; knows its worker pids."""

    def __init__(
        self, url: str, host: str, port: int, lab: str, processes: int, logdir: Path,
        module: str = "ingest",
    ) -> None:  # fmt: skip
        self.module = module  # what `python -m` runs
        self.http = free_port()
        self.processes = processes
        self.client_id = f"bench-{lab}"
        self.env = dict(os.environ)
        self.env.update(
            LIVELAB_DATABASE_URL=url,
            LIVELAB_MIGRATE="false",
            LIVELAB_MQTT_HOST=host,
            LIVELAB_MQTT_PORT=str(port),
            LIVELAB_INGEST_CLIENT_ID=self.client_id,
            LIVELAB_INGEST_TOPICS=f"livelab/{lab}/#",
            LIVELAB_INGEST_SESSION_EXPIRY="600",
            LIVELAB_INGEST_HTTP_PORT=str(self.http),
            LIVELAB_INGEST_SHARE_GROUP=f"bench-{lab}",
            LIVELAB_LOG_LEVEL="WARNING",
            **mqtt_login_env("INGEST"),
        )
        self.log = logdir / f"ingest-{lab}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", self.module]
        if self.processes > 1:
            args += ["--processes", str(self.processes)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=out, cwd=ROOT)
        for i in range(self.processes):
            self._wait_ready(self.http + i)

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"bench: a worker did not become ready; see {self.log}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        if self.processes == 1:
            return [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        ids = [self.client_id] if self.processes == 1 else [
            f"{self.client_id}-{i}" for i in range(1, self.processes + 1)
        ]  # fmt: skip
        for cid in ids:  # leave no session behind on the broker
            subprocess.run(
                ["mosquitto_sub", "-h", self.env["LIVELAB_MQTT_HOST"], "-p",
                 self.env["LIVELAB_MQTT_PORT"], *mqtt_login_args(), "-i", cid, "-t",
                 "bench/none", "-E"],
                check=False, capture_output=True, timeout=10,
            )  # fmt: skip


def committed(conn: psycopg.Connection, lab: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(reading_count), 0) FROM series WHERE lab = %s", (lab,)
    ).fetchone()
    return int(row[0]) if row else 0


def wait_committed(conn: psycopg.Connection, lab: str, total: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if committed(conn, lab) >= total:
            return now
        if now > deadline:
            raise SystemExit(f"bench: only {committed(conn, lab)} of {total} readings committed")
        time.sleep(0.01)


def broker_ceiling(host: str, port: int, inputs: list[bytes], messages: int) -> float:
    run = secrets.token_hex(4)
    topics = [f"bench/{run}/p{i}" for i in range(len(inputs))]
    sub = Subscriber(host, port, f"bench/{run}/#", messages)
    started = time.monotonic()
    publishers(host, port, topics, inputs)
    return messages / (sub.wait() - started)


def live_run(url: str, args: argparse.Namespace, processes: int, per_message: int,
             messages: int, logdir: Path, module: str = "ingest") -> dict[str, float]:  # fmt: skip
    """Start workers (``python -m module``), then the publishers with the clock; until
    everything is committed."""
    lab = f"b{secrets.token_hex(4)}"
    n = args.publishers
    inputs = [payload_lines(messages, per_message, offset=i * messages) for i in range(n)]
    ingest = Ingest(url, args.mqtt_host, args.mqtt_port, lab, processes, logdir, module)
    ingest.start()
    try:
        pids = ingest.worker_pids()
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        with psycopg.connect(url, autocommit=True) as conn:
            topics = [f"livelab/{lab}/dev-{i}/telemetry" for i in range(n)]
            started = time.monotonic()
            threading.Thread(
                target=publishers, args=(args.mqtt_host, args.mqtt_port, topics, inputs),
                daemon=True,
            ).start()  # fmt: skip
            total = n * messages * per_message
            done = wait_committed(conn, lab, total)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        rss = max(peak_rss_mib(pid) for pid in pids)
    finally:
        ingest.stop()
    seconds = done - started
    return {
        "readings_per_s": total / seconds,
        "messages_per_s": n * messages / seconds,
        "cpu_us_per_reading": cpu / total * 1e6,
        "peak_rss_mib": rss,
    }


def copy_ceiling(url: str, rows: int) -> float:
    """Rows/s of a binary COPY of `rows` readings into the project's `readings` hypertable."""
    data = [
        (1_000_000 + i % 100, BASE + timedelta(seconds=i // 100), float(i)) for i in range(rows)
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY readings (series_id, time, value) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int4", "timestamptz", "float8"])
            for row in data:
                copy.write_row(row)
        elapsed = time.perf_counter() - started
    # The rows stay (series ids no series has; the bench's database is dropped at the end).
    return rows / elapsed


def latency_run(url: str, args: argparse.Namespace, rate: float, logdir: Path) -> dict[str, float]:
    """Publish-to-committed latency at `rate` single readings/s (ten paced publishers)."""
    lab = f"l{secrets.token_hex(4)}"
    n = args.publishers
    seconds = args.latency_seconds
    ingest = Ingest(url, args.mqtt_host, args.mqtt_port, lab, 1, logdir)
    ingest.start()
    procs = [
        subprocess.Popen(
            mosquitto_pub_command(
                args.mqtt_host, args.mqtt_port, f"livelab/{lab}/dev-{i}/telemetry"
            ),
            stdin=subprocess.PIPE,
        )
        for i in range(n)
    ]
    sent = [0] * n
    latencies: list[float] = []

    def pace(i: int) -> None:
        stdin = procs[i].stdin
        assert stdin is not None
        per_tick, tick = rate / n * 0.01, 0.01
        due, carry = time.monotonic(), 0.0
        end = due + seconds
        while due < end:
            carry += per_tick
            count, carry = int(carry), carry - int(carry)
            lines = []
            for _ in range(count):
                ts = datetime.now(UTC).isoformat()
                lines.append(f'{{"ts":"{ts}","values":{{"v":{sent[i]}}}}}\n')
                sent[i] += 1
            stdin.write("".join(lines).encode())
            stdin.flush()
            due += tick
            time.sleep(max(0.0, due - time.monotonic()))
        stdin.close()

    try:
        feeders = [threading.Thread(target=pace, args=(i,), daemon=True) for i in range(n)]
        for f in feeders:
            f.start()
        with psycopg.connect(url, autocommit=True) as conn:
            seen: set[tuple[int, datetime]] = set()
            deadline = time.monotonic() + seconds + 60
            while time.monotonic() < deadline:
                feeding = any(f.is_alive() for f in feeders)
                rows = conn.execute(
                    "SELECT r.series_id, r.time FROM readings r JOIN series s ON s.id = "
                    "r.series_id WHERE s.lab = %s AND r.time > now() - interval '20 s'",
                    (lab,),
                ).fetchall()
                now = datetime.now(UTC)
                for row in rows:
                    if row not in seen:
                        seen.add(row)
                        latencies.append((now - row[1]).total_seconds())
                if not feeding and len(seen) >= sum(sent):
                    break
                time.sleep(0.01)
        for proc in procs:
            proc.wait(60)
    finally:
        ingest.stop()
    latencies.sort()
    return {
        "rate": rate,
        "readings": float(len(latencies)),
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[int(0.99 * (len(latencies) - 1))],
    }


def live_figures(url: str, args: argparse.Namespace, logdir: Path, name: str, per_message: int,
                 messages: int, ceiling_name: str, ceiling: float) -> dict[str, float]:  # fmt: skip
    """`live_run` with 1 and 2 workers, as result entries beside the ceiling's ratio."""
    out: dict[str, float] = {}
    for processes in (1, 2):
        log(f"livelab, {processes} worker(s): {args.publishers} x {messages} messages of "
            f"{per_message} reading(s)")  # fmt: skip
        run = live_run(url, args, processes, per_message, messages, logdir)
        key = f"{name}_{processes}w"
        out[f"{key}_readings_per_s"] = round(run["readings_per_s"])
        out[f"{key}_vs_{ceiling_name}"] = round(run["readings_per_s"] / ceiling, 3)
        out[f"{key}_cpu_us_per_reading"] = round(run["cpu_us_per_reading"], 2)
        out[f"{key}_peak_rss_mib"] = round(run["peak_rss_mib"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Defaults take about two minutes on a 2-core machine.",
    )
    parser.add_argument("--publishers", type=int, default=10, help="mosquitto_pub processes")
    parser.add_argument(
        "--messages", type=int, default=10_000,
        help="single-reading messages per publisher (default %(default)s; at most 50 000)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-messages", type=int, default=1_000,
        help="100-reading messages per publisher (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "LIVELAB_TEST_DATABASE_URL", "postgresql://livelab:livelab@127.0.0.1:5432/postgres"
        ),
        help="a server where the bench may create and drop its own database",
    )
    add_broker_arguments(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= 50_000:
        parser.error("--messages must be 1..50000 (mosquitto_pub -l wraps its ids past 65 535)")

    logdir = ROOT / "bench" / "results"
    logdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
    with scratch_database(args.admin_url, "livelab_bench") as url:
        n, m, b = args.publishers, args.messages, args.batch_messages
        log(f"broker ceiling: {n} x {m} single-reading messages")
        single = [payload_lines(m, 1, offset=i * m) for i in range(n)]
        ceiling = broker_ceiling(args.mqtt_host, args.mqtt_port, single, n * m)
        result["broker_ceiling_msg_per_s"] = round(ceiling)
        result.update(live_figures(url, args, logdir, "single", 1, m, "broker", ceiling))
        log(f"COPY ceiling: {n * b * 100} rows")
        copy = copy_ceiling(url, n * b * 100)
        result["copy_ceiling_rows_per_s"] = round(copy)
        result.update(live_figures(url, args, logdir, "batch100", 100, b, "copy", copy))
        rate = int(result["single_1w_readings_per_s"]) / 2  # type: ignore[call-overload]
        log(f"latency at {rate:.0f} readings/s for {args.latency_seconds:g} s")
        lat = latency_run(url, args, rate, logdir)
        result["latency_rate_per_s"] = round(lat["rate"])
        result["latency_p50_s"] = round(lat["p50_s"], 3)
        result["latency_p99_s"] = round(lat["p99_s"], 3)
    path = save_result("ingest", result)
    log(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
