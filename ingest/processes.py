"""``livelab-ingest --processes N``: N worker processes on one host, in one share group.

Python runs one thread of Python code at a time, so one worker uses about one core. To use
more, run more workers: each child is a plain ``livelab-ingest`` with its own client id
(`{LIVELAB_INGEST_CLIENT_ID}-{i}`, so its own persistent session) in one MQTT 5 share group
(`LIVELAB_INGEST_SHARE_GROUP`, default ``livelab``), and its own HTTP port
(`LIVELAB_INGEST_HTTP_PORT` + i). The broker splits the messages between them; storing stays
exactly once because every write is idempotent.

The parent only supervises: it forwards SIGTERM/SIGINT, restarts a child that exits on its own
(after a second, so a crash loop does not spin), and exits when all children have stopped.
Keep N stable: a session of a client id no longer started still receives its share of
messages until its expiry, and they wait there (`tests` and README say how to remove one).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from ingest.settings import Settings

log = logging.getLogger("livelab.ingest.processes")

DEFAULT_SHARE_GROUP = "livelab"
RESTART_DELAY = 1.0


def child_environments(settings: Settings, processes: int) -> list[dict[str, str]]:
    """The environment of each child: its client id, the share group and its HTTP port."""
    group = settings.ingest_share_group or DEFAULT_SHARE_GROUP
    envs = []
    for i in range(1, processes + 1):
        env = dict(os.environ)
        env["LIVELAB_INGEST_CLIENT_ID"] = f"{settings.ingest_client_id}-{i}"
        env["LIVELAB_INGEST_SHARE_GROUP"] = group
        env["LIVELAB_INGEST_PROCESSES"] = "1"  # a child is one worker
        port = settings.ingest_http_port
        env["LIVELAB_INGEST_HTTP_PORT"] = str(port + i - 1 if port else 0)
        envs.append(env)
    return envs


def supervise(settings: Settings, processes: int) -> int:
    """Run `processes` workers until SIGTERM/SIGINT; returns the exit code."""
    envs = child_environments(settings, processes)
    stopping = threading.Event()
    children: list[subprocess.Popen[bytes] | None] = [None] * processes

    def start(i: int) -> None:
        env = envs[i]
        children[i] = subprocess.Popen([sys.executable, "-m", "ingest"], env=env)
        log.info(
            "started worker %d of %d (pid %d, client id %s, share group %s, http port %s)",
            i + 1, processes, children[i].pid, env["LIVELAB_INGEST_CLIENT_ID"],  # type: ignore[union-attr]
            env["LIVELAB_INGEST_SHARE_GROUP"], env["LIVELAB_INGEST_HTTP_PORT"],
        )  # fmt: skip

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    for i in range(processes):
        start(i)
    while not stopping.is_set():
        for i, child in enumerate(children):
            if child is not None and child.poll() is not None and not stopping.is_set():
                log.error(
                    "worker %d exited with %d; restarting it in %.0f s",
                    i + 1, child.returncode, RESTART_DELAY,
                )  # fmt: skip
                time.sleep(RESTART_DELAY)
                if not stopping.is_set():
                    start(i)
        stopping.wait(0.5)
    codes = [child.wait() for child in children if child is not None]
    log.info("all %d workers stopped (exit codes %s)", processes, codes)
    return 0 if all(code == 0 for code in codes) else 1
