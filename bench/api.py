"""API benchmark: aggregates over a year of 1-minute readings for 20 series, against the raw SQL.

1. Load (resumable): a database of its own (``livelab_bench_api`` by default, created on the
   server of ``--admin-url``; ``--drop`` removes it at the end), migrated by livelab, its daily
   partials set to follow Europe/Stockholm (``livelab-rollups zone``, as Helsingborg's
   deployment would), filled with a year of 1-minute readings for 20 series (10.5 M rows)
   through ``ingest.store.Store.write``, the writer ingest uses, rollups included, one day of
   all series per write. A second run continues from the last day stored.
2. The API (a real uvicorn process, ``--workers`` processes) answers each request of the table
   below ``--runs`` times; beside it, the plain ``time_bucket`` SQL over ``readings`` of the
   same aggregate (``api.buckets.aggregate_query``: what the API ran before the rollups),
   ``--raw-runs`` times, in the same run. Median and p95 of each.
3. Requests/s with 16 concurrent clients for ``/latest`` and for a one-month ``1d`` aggregate.
4. The cost of keeping rollups, for 100-reading messages (one instant of 100 sensors each):
   live ingest readings/s (``--publishers`` mosquitto_pub clients against one worker, as in
   ``bench.ingest``) with the real worker and with one that keeps no rollups, alternating,
   ``--live-rounds`` runs each; and ``Store.write`` readings/s with 1, 10 and
   ``--ingest-batch`` messages per write, with and without the rollup CTEs in the move
   statement, alternating, in labs of their own. Medians.
5. ``--explain``: EXPLAIN ANALYZE of the composed queries, printed to stderr.

Run: ``.venv/bin/python -m bench.api`` (``--help`` for options); the load takes a few minutes
the first time. Writes a JSON summary to bench/results/. Figures vary with the machine's load:
compare each request with its raw SQL, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import ingest.store as store_module
from api import keys
from api.buckets import BUCKETS, DEFAULT_STATS, aggregate_query, local_midnight
from bench.common import ROOT, add_broker_arguments, log, save_result, scratch_database
from bench.ingest import free_port, live_run
from bench.ingest_without_rollups import MOVES, without_rollups
from ingest import rollups
from ingest.store import Store
from schemas.migrate import migrate
from schemas.times import parse_rfc3339

LAB = "bench-year"
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 365
SERIES = [(f"station-{i // 4 + 1}", f"s{i % 4}") for i in range(20)]
STOCKHOLM = ZoneInfo("Europe/Stockholm")


def _value(i: int, minute: int) -> float:
    # Deterministic, with a daily cycle and some jitter; two decimals like a real sensor.
    return round(20 + 8 * math.sin(minute * 2 * math.pi / 1440 + i) + (minute * 7919 % 97) / 50, 2)


def load(url: str) -> int:
    """Store the year through Store.write, from the first day not stored yet; readings stored."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(last_time) FROM series WHERE lab = %s", (LAB,)).fetchone()
    last = row[0] if row else None
    first_day = 0 if last is None else (last - START) // timedelta(days=1) + 1
    if first_day >= DAYS:
        return 0
    log(f"loading days {first_day}..{DAYS - 1} of {DAYS} (a year of 1-minute readings)")
    store = Store(url)
    stored = 0
    started = time.monotonic()
    try:
        for day in range(first_day, DAYS):
            base = START + timedelta(days=day)
            batch = [
                (LAB, device, sensor, base + timedelta(minutes=m), _value(i, day * 1440 + m))
                for i, (device, sensor) in enumerate(SERIES)
                for m in range(1440)
            ]
            stored += store.write(batch).inserted
            if day % 30 == 29:
                rate = stored / (time.monotonic() - started)
                log(f"  day {day + 1}/{DAYS}: {stored} readings, {rate:.0f}/s")
    finally:
        store.close()
    return stored


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
    }


def _timed(fn: Callable[[], Any], runs: int) -> tuple[dict[str, float], Any]:
    out = None
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return _stats(samples), out


def _raw_sql(
    url: str, bucket: str, tz: str, start: datetime, end: datetime, one: bool
) -> list[tuple]:
    spec = BUCKETS[bucket]
    zone = ZoneInfo(tz)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM series WHERE lab = %s ORDER BY device, sensor", (LAB,)
            )
        ]
        ids = ids[:1] if one else ids
        rows = conn.execute(
            aggregate_query(spec, list(DEFAULT_STATS), fill=False),
            {
                "ids": ids,
                "start": start,
                "end": end,
                "tz": tz,
                "origin": local_midnight(start, zone),
            },
        ).fetchall()
    return rows


def _mismatches(body: bytes, csv_format: bool, raw: list[tuple]) -> int:
    """Rows where the API's answer differs from the raw SQL's (device, sensor, bucket, avg,
    min, max, count): min, max and count exactly, avg to 1e-9 relative; missing rows count."""
    if csv_format:
        rows = list(csv.DictReader(io.StringIO(body.decode())))
    else:
        rows = orjson.loads(body)["data"]
    want = {(d, s, b.timestamp()): (avg, lo, hi, n) for d, s, b, avg, lo, hi, n in raw}
    bad = abs(len(rows) - len(want))
    for row in rows:
        key = (row["device"], row["sensor"], parse_rfc3339(row["bucket"]).timestamp())
        if key not in want:
            bad += 1
            continue
        avg, lo, hi, n = want[key]
        same = (
            int(row["count"]) == n
            and float(row["min"]) == lo
            and float(row["max"]) == hi
            and math.isclose(float(row["avg"]), avg, rel_tol=1e-9)
        )
        bad += 0 if same else 1
    return bad


# The deployment's zone: the daily partials follow it (`livelab-rollups zone`), as they would
# for Helsingborg's partners. Days and months in UTC then read hourly partials.
ZONE = "Europe/Stockholm"

REQUESTS = [
    # name, query parameters, one series only
    ("1d Europe/Stockholm, 20 series", {"bucket": "1d", "tz": "Europe/Stockholm"}, False),
    ("1mo Europe/Stockholm, 20 series", {"bucket": "1mo", "tz": "Europe/Stockholm"}, False),
    ("1d UTC, 20 series", {"bucket": "1d", "tz": "UTC"}, False),
    ("1mo UTC, 20 series", {"bucket": "1mo", "tz": "UTC"}, False),
    ("1h, 20 series, csv", {"bucket": "1h", "format": "csv"}, False),
    ("1h, one series", {"bucket": "1h", "device": "station-1", "sensor": "s0"}, True),
]


class Api:
    """The API as partners run it: uvicorn, `workers` processes, on the bench database."""

    def __init__(self, url: str, workers: int, logfile: Path) -> None:
        self.port = free_port()
        # The per-key limits are off: this measures what the server can do, and all clients
        # share one key (a partner's allowance is a policy, not a capacity).
        env = dict(
            os.environ,
            LIVELAB_DATABASE_URL=url,
            LIVELAB_API_MIGRATE="false",
            LIVELAB_API_RATE_LIMIT="0",
            LIVELAB_API_KEY_MAX_CONCURRENT="0",
        )
        self._log = logfile.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
             "--log-level", "warning", "--no-access-log"],
            env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the API exited; see {logfile}")
            time.sleep(0.1)
        raise SystemExit(f"bench: the API did not start; see {logfile}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    """One keep-alive HTTP/1.1 GET; reads the whole answer (Content-Length or chunked)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    if status != b"200":
        raise SystemExit(f"bench: HTTP {status.decode()} from the API")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return
    at = lower.index(b"content-length:") + 15
    await reader.readexactly(int(lower[at : lower.index(b"\r\n", at)]))


async def _rate(base: str, path: str, params: dict[str, str], headers: dict[str, str],
                clients: int, seconds: float) -> float:  # fmt: skip
    """Requests/s of `clients` concurrent keep-alive connections for `seconds`.

    A minimal client on asyncio streams (httpx itself tops out near the server's rate on
    these 2 cores, which would measure the client)."""
    url = httpx.URL(base + path, params=params)
    lines = [f"GET {url.raw_path.decode()} HTTP/1.1", f"Host: {url.host}:{url.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    done = 0
    stop_at = time.monotonic() + seconds

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            while time.monotonic() < stop_at:
                await _get(reader, writer, request)
                done += 1
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(clients)))
    return done / (time.monotonic() - t0)


def ingest_cost(url: str, batch_messages: int, rounds: int) -> dict[str, float]:
    """Store.write readings/s for 100-reading messages, with and without rollup upkeep."""
    # The store's two move statements (the fast path new readings take, and the exact one),
    # with and without the rollup CTEs.
    with_rollups = {name: getattr(store_module, name) for name in MOVES}
    without = {name: without_rollups(sql) for name, sql in with_rollups.items()}

    def use(statements: dict[str, str]) -> None:
        for name, sql in statements.items():
            setattr(store_module, name, sql)

    store = Store(url)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    t = datetime(2024, 1, 1, tzinfo=UTC)
    run = secrets.token_hex(3)  # labs of this run only: a rerun must insert, not find duplicates
    try:
        for r in range(rounds):
            for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
                lab = f"bench-ingest-{run}-{mode}"
                batch = []
                for _ in range(batch_messages):
                    t += timedelta(seconds=1)
                    batch.extend((lab, "dev-1", f"s{j}", t, float(j)) for j in range(100))
                use(with_rollups if mode == "with" else without)
                t0 = time.perf_counter()
                n = store.write(batch).inserted
                rates[mode].append(n / (time.perf_counter() - t0))
    finally:
        use(with_rollups)
        store.close()
    w, wo = statistics.median(rates["with"]), statistics.median(rates["without"])
    return {
        "ingest_readings_per_s_with_rollups": round(w),
        "ingest_readings_per_s_without_rollups": round(wo),
        "ingest_rollup_cost_pct": round((1 - w / wo) * 100, 1),
    }


def live_ingest_cost(admin_url: str, args: argparse.Namespace) -> dict[str, float]:
    """Live ingest readings/s of 100-reading messages (``--publishers`` mosquitto_pub clients
    against one worker, as in `bench.ingest`), with the real worker and with one whose writer
    keeps no rollups (`bench.ingest_without_rollups`), alternating, in a database of their own
    whose daily partials follow `ZONE`; medians."""
    logdir = ROOT / "bench" / "results"
    logdir.mkdir(parents=True, exist_ok=True)
    rates: dict[str, list[float]] = {"ingest": [], "bench.ingest_without_rollups": []}
    with scratch_database(admin_url, "livelab_bench_cost") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            rollups.set_zone(conn, ZONE)
        for r in range(args.live_rounds):
            for module in list(rates) if r % 2 == 0 else list(rates)[::-1]:
                run = live_run(url, args, 1, 100, args.live_messages, logdir, module)
                rates[module].append(run["readings_per_s"])
                log(f"  live ingest, {module}: {run['readings_per_s']:.0f} readings/s")
    w = statistics.median(rates["ingest"])
    wo = statistics.median(rates["bench.ingest_without_rollups"])
    return {
        "ingest_readings_per_s_with_rollups": round(w),
        "ingest_readings_per_s_without_rollups": round(wo),
        "ingest_rollup_cost_pct": round((1 - w / wo) * 100, 1),
        "runs_per_mode": args.live_rounds,
    }


def explain(url: str, base: str, key: str) -> None:
    """EXPLAIN ANALYZE of the composed query of each request (stderr)."""
    from api import compose

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        found = conn.execute(
            'SELECT id FROM series WHERE lab = %s ORDER BY device COLLATE "C", sensor COLLATE "C"',
            (LAB,),
        ).fetchall()
        for name, params, one in REQUESTS:
            spec = BUCKETS[params["bucket"]]
            zone = ZoneInfo(params.get("tz", "UTC"))
            end = START + timedelta(days=DAYS)
            origin = local_midnight(START, zone)
            starts = compose.bucket_starts(spec, zone, origin, START, end)
            step = None if spec.calendar else spec.nominal
            parts = compose.plan(starts, START, end, step, compose.grids(zone, ZONE))
            query = compose.composed_query(spec, list(DEFAULT_STATS), parts, order="series")
            ids = [r[0] for r in found][: 1 if one else None]
            args = {"ids": ids, "starts": starts, "origin": origin, **compose.plan_params(parts)}
            rows = conn.execute(
                b"EXPLAIN (ANALYZE, BUFFERS) " + query.as_bytes(conn), args
            ).fetchall()
            log(f"EXPLAIN ANALYZE, {name}:\n" + "\n".join(r[0] for r in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "LIVELAB_TEST_DATABASE_URL", "postgresql://livelab:livelab@127.0.0.1:5432/postgres"
        ),
        help="server where the bench database is created (default %(default)s)",
    )
    parser.add_argument("--dbname", default="livelab_bench_api", help="default %(default)s")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--runs", type=int, default=11, help="API runs per request (11)")
    parser.add_argument("--raw-runs", type=int, default=3, help="raw SQL runs per request (3)")
    parser.add_argument("--workers", type=int, default=2, help="API processes (2)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--seconds", type=float, default=10, help="per concurrency test (10)")
    parser.add_argument("--ingest-batch", type=int, default=200, help="messages per write")
    parser.add_argument("--ingest-rounds", type=int, default=20, help="writes per mode (20)")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the queries")
    parser.add_argument("--publishers", type=int, default=10, help="live ingest publishers (10)")
    parser.add_argument(
        "--live-messages", type=int, default=1000,
        help="100-reading messages per publisher per live ingest run (1000)",
    )  # fmt: skip
    parser.add_argument("--live-rounds", type=int, default=5, help="live runs per mode (5)")
    add_broker_arguments(parser)
    args = parser.parse_args(argv)

    params = conninfo_to_dict(args.admin_url)
    params["dbname"] = args.dbname
    url = make_conninfo("", **params)
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (args.dbname,)
        ).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{args.dbname}"')
    result: dict[str, Any] = {}
    api: Api | None = None
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            if rollups.zone_of(conn) != ZONE:
                t0 = time.monotonic()
                n = rollups.set_zone(conn, ZONE)
                took = round(time.monotonic() - t0, 2)
                result["rollup zone set"] = {"zone": ZONE, "daily_partials": n, "seconds": took}
                log(f"daily partials now follow {ZONE}: {result['rollup zone set']}")
        load(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
            result["readings"] = int(
                conn.execute(
                    "SELECT sum(reading_count) FROM series WHERE lab = %s", (LAB,)
                ).fetchone()[0]  # type: ignore[index]
            )
            result["readings_size"] = conn.execute(
                "SELECT pg_size_pretty(hypertable_size('readings'))"
            ).fetchone()[0]  # type: ignore[index]
            key, _ = keys.create_key(conn, "bench", [LAB])
        headers = {"Authorization": f"Bearer {key}"}
        api = Api(url, args.workers, Path(tempfile.mkdtemp(prefix="livelab-bench-")) / "api.log")
        end = START + timedelta(days=DAYS)
        span = {"start": START.isoformat(), "end": end.isoformat()}
        with httpx.Client(base_url=api.base, headers=headers, timeout=120) as client:
            for name, extra, one in REQUESTS:
                query = {**span, **extra}

                def call(q: dict[str, str] = query) -> bytes:
                    r = client.get(f"/v1/labs/{LAB}/aggregates", params=q)
                    r.raise_for_status()
                    return r.content

                call()  # warm up
                api_stats, body = _timed(call, args.runs)
                raw_stats, rows = _timed(
                    lambda e=extra, o=one: _raw_sql(
                        url, e["bucket"], e.get("tz", "UTC"), START, end, o
                    ),
                    args.raw_runs,
                )
                ratio = raw_stats["median_ms"] / max(api_stats["median_ms"], 0.1)
                result[name] = {
                    "api": api_stats,
                    "raw_sql": raw_stats,
                    "raw_over_api": round(ratio, 1),
                    "bytes": len(body),
                    "rows": len(rows),
                    # The answer itself, against the raw readings' aggregate of the same run.
                    "rows_differing_from_raw": _mismatches(
                        body, extra.get("format") == "csv", rows
                    ),
                }
                log(f"{name}: {result[name]}")
            day = {"start": "2025-06-01T00:00:00Z", "end": "2025-06-02T00:00:00Z",
                   "device": "station-1", "sensor": "s0", "limit": "10000"}  # fmt: skip

            def readings() -> int:
                r = client.get(f"/v1/labs/{LAB}/readings", params=day)
                r.raise_for_status()
                return len(r.json()["data"])

            result["readings, one day of one series"] = {"api": _timed(readings, args.runs)[0]}
        month = {"start": "2025-06-01T00:00:00+02:00", "end": "2025-07-01T00:00:00+02:00",
                 "bucket": "1d", "tz": "Europe/Stockholm"}  # fmt: skip
        for name, path, query in (
            ("health (ceiling)", "/health", {}),
            ("latest", f"/v1/labs/{LAB}/latest", {}),
            ("one-month 1d aggregate", f"/v1/labs/{LAB}/aggregates", month),
        ):
            rate = asyncio.run(_rate(api.base, path, query, headers, args.clients, args.seconds))
            result[f"requests/s, {args.clients} clients, {name}"] = round(rate)
            log(f"{name}: {rate:.0f} requests/s")
        api.stop()
        api = None
        for batch, rounds in ((1, 10 * args.ingest_rounds), (10, 3 * args.ingest_rounds),
                              (args.ingest_batch, args.ingest_rounds)):  # fmt: skip
            cost = ingest_cost(url, batch, rounds)
            result[f"Store.write, {batch} messages of 100 readings per write"] = cost
            log(f"Store.write, {batch} messages per write: {cost}")
        log(f"live ingest: {args.publishers} x {args.live_messages} messages of 100 readings")
        result["live ingest, 100-reading messages, 1 worker"] = live_ingest_cost(
            args.admin_url, args
        )
        log(f"live ingest: {result['live ingest, 100-reading messages, 1 worker']}")
        if args.explain:
            explain(url, "", key)
        result["api_workers"] = args.workers
        result["cpus"] = os.cpu_count()
    finally:
        if api is not None:
            api.stop()
        if args.drop:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{args.dbname}" WITH (FORCE)')
    save_result("api", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
