"""Helpers shared by tests: waiting, a plain MQTT device, an ingest worker's settings, queries."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from ingest.settings import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def credentials() -> tuple[str, str | None] | None:
    """(username, password) of the test suite's broker credential, or None (anonymous)."""
    username = os.environ.get("LIVELAB_MQTT_USERNAME")
    return (username, os.environ.get("LIVELAB_MQTT_PASSWORD")) if username else None


def login(client: mqtt.Client) -> mqtt.Client:
    """Give `client` the test suite's broker credential, when there is one (conftest puts it in
    LIVELAB_MQTT_USERNAME / _PASSWORD); an anonymous broker accepts it too."""
    if (cred := credentials()) is not None:
        client.username_pw_set(*cred)
    return client


def forget_session(host: str, port: int, client_id: str) -> None:
    """Remove a persistent session from the broker so tests leave nothing queued behind."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    login(client)
    client.connect(host, port, clean_start=True)
    client.loop_start()
    time.sleep(0.1)
    client.disconnect()
    client.loop_stop()


def worker_settings(database_url: str, broker: tuple[str, int], lab: str, **extra) -> Settings:
    values = dict(
        database_url=database_url,
        migrate=False,
        mqtt_host=broker[0],
        mqtt_port=broker[1],
        ingest_client_id=f"test-ingest-{lab}-{uuid.uuid4().hex[:6]}",
        ingest_topics=f"livelab/{lab}/#",
        ingest_session_expiry=300,
        ingest_http_port=0,
        ingest_batch_linger_ms=20,
    )
    values.update(extra)
    return Settings(**values)


class Publisher:
    """A plain device: a real paho client publishing and waiting for the broker's PUBACKs."""

    def __init__(self, host: str, port: int, protocol: int = mqtt.MQTTv311) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.max_inflight_messages_set(1000)
        login(self.client)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        assert info.is_published()

    def publish_many(self, items: list[tuple[str, bytes]], qos: int = 1) -> None:
        infos = [self.client.publish(t, p, qos=qos) for t, p in items]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def form2_messages(lab: str, n: int, offset: int = 0) -> list[tuple[str, bytes]]:
    """`n` form 2 messages of lab `lab`, one reading each, a second apart, spread on 5 devices."""
    base = datetime(2026, 6, 1, tzinfo=UTC)
    return [
        (
            f"livelab/{lab}/dev-{i % 5}/telemetry",
            json.dumps(
                {"ts": (base + timedelta(seconds=i)).isoformat(), "values": {"v": float(i)}}
            ).encode(),
        )
        for i in range(offset, offset + n)
    ]


def count_readings(db: psycopg.Connection, lab: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM readings r JOIN series s ON s.id = r.series_id WHERE s.lab = %s",
        (lab,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def rejected_messages(db: psycopg.Connection, lab: str) -> int:
    """Rejected messages of a lab: a merged row stands for `repeats` of them."""
    row = db.execute(
        "SELECT coalesce(sum(repeats), 0) FROM rejections WHERE lab = %s", (lab,)
    ).fetchone()
    return int(row[0]) if row else 0


def rejections(db: psycopg.Connection, lab: str) -> list[tuple]:
    return db.execute(
        "SELECT topic, reason, rejected_count, payload, payload_size FROM rejections "
        "WHERE lab = %s ORDER BY id",
        (lab,),
    ).fetchall()


class PrivatePostgres:
    """A PostgreSQL server of a test's own (with timescaledb), which the test may restart.

    The shared server is never restarted by tests: other work may be using it.
    """

    def __init__(self) -> None:
        import os
        import shutil
        import tempfile

        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
        if not candidates:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bindir = candidates[0].parent
        self.root = Path(tempfile.mkdtemp(prefix="livelab-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        # initdb refuses to run as root: run the server as the postgres user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "livelab", "--auth=trust", "--no-sync")
        self.url = f"postgresql://livelab@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c shared_preload_libraries=timescaledb -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://livelab@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        import shutil
        import subprocess

        subprocess.run(
            [*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
             "stop"], capture_output=True, check=False,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


class DroppingProxy:
    """A TCP proxy to the broker whose connections can be cut, like a broker restart."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.every: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            self.every += [client, upstream]
            self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        src.close()  # each socket is the source of one pipe thread: closed once it ends

    def cut(self) -> None:
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.conns = []

    def stop_accepting(self) -> None:
        self.server.close()

    def close(self) -> None:
        self.cut()
        self.server.close()
        for s in self.every:
            s.close()


def run_sim(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`livelab-sim ARGS` in a subprocess (this interpreter), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "simulators", *args], capture_output=True, text=True, timeout=timeout
    )


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{self.env['LIVELAB_INGEST_HTTP_PORT']}/ready"

        def ready() -> bool:
            import urllib.request

            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(ready, timeout=30, what="worker /ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def sigterm_a_waiting_worker(env: dict[str, str], wait: float = 2.0) -> tuple[int, bytes]:
    """Start ``python -m ingest`` with `env`, check it is still running (waiting for a service)
    after `wait` s, SIGTERM it; returns its exit code and output. Kills it if it hangs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        time.sleep(wait)
        assert proc.poll() is None, "the worker must keep waiting, not exit"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out
