"""Broker persistence benchmark: what does saving the queue promptly cost?

deploy/mosquitto/livelab.conf makes Mosquitto save its in-memory database every 2 s
(`autosave_interval 1`) instead of every 1800 s, and each save rewrites the whole queue. This
measures, in one run, on private brokers that differ only in their autosave options:

- "default": livelab.conf without its autosave lines (Mosquitto's 1800 s: the old settings);
- "livelab": livelab.conf as it is;
- "on_changes": autosave_on_changes true, autosave_interval 1000 (a save per 1000 changes),
  the alternative livelab.conf rejects.

Each broker holds a persistent session (``mosquitto_sub -c``) that is away, so everything
published queues for it, as for an absent ingest worker. ``mosquitto_pub -l`` publishes
QoS 1 messages in rounds of `--round` messages, taking turns between the brokers so that the
machine's load drifts alike for all; each round's rate is reported with the queue depth it
ended at. Last, the time one save takes at the final depth (SIGUSR1 until the renamed file,
the median of the brokers): the "livelab" broker spends that every 2 s.

Run: ``.venv/bin/python -m bench.broker_persistence`` (``--help`` for options). Writes a
JSON summary to bench/results/. Compare the ratios to "default", not absolute rates.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, log, mosquitto_pub, save_result
from bench.ingest import free_port, payload_lines

LIVELAB_CONF = ROOT / "deploy" / "mosquitto" / "livelab.conf"
TOPIC = "livelab/bench/dev-1/telemetry"


def without_autosave(options: str) -> str:
    return "\n".join(
        line for line in options.splitlines() if not line.strip().startswith("autosave")
    )


def variants() -> dict[str, str]:
    options = LIVELAB_CONF.read_text()
    base = without_autosave(options)
    return {
        "default": base,
        "livelab": options,
        "on_changes": base + "\nautosave_on_changes true\nautosave_interval 1000\n",
    }


class Broker:
    """A private Mosquitto with persistence in a temporary directory, and an absent session."""

    def __init__(self, options: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="livelab-bench-mosq-"))
        self.port = free_port()
        self.db_file = self.dir / "mosquitto.db"
        conf = self.dir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""  # stay the user that owns self.dir
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.dir}/\n{user}{options}\n"
        )
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "log").open("wb"),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"bench: private mosquitto did not start: {self.dir}/log"
                    raise SystemExit(msg) from None
                time.sleep(0.05)
        # A persistent session (clean session off) that subscribes and leaves: it queues.
        subprocess.run(
            ["mosquitto_sub", "-p", str(self.port), "-i", "bench-absent-worker", "-c", "-q", "1",
             "-t", "livelab/bench/#", "-E"],
            check=True,
        )  # fmt: skip

    def publish(self, lines: list[bytes]) -> float:
        """Publish the lines at QoS 1; the rate in messages/s."""
        started = time.perf_counter()
        mosquitto_pub("127.0.0.1", self.port, TOPIC, lines)
        return len(lines) / (time.perf_counter() - started)

    def save_seconds(self) -> float:
        """How long one save of the current queue takes: SIGUSR1 until the file is replaced."""

        def version() -> tuple[int, int] | None:
            try:
                st = os.stat(self.db_file)
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_mtime_ns

        before = version()
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGUSR1)
        while version() == before:
            time.sleep(0.001)
        return time.perf_counter() - started

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="queued per broker")
    parser.add_argument("--round", type=int, default=50_000, help="messages per timed round")
    parser.add_argument(
        "--variants",
        default="default,livelab,on_changes",
        help="comma-separated; on_changes slows down with the square of the queue: leave it "
        "out beyond a few 100 000 messages",
    )
    args = parser.parse_args()
    options = variants()
    chosen = args.variants.split(",")
    if "default" not in chosen or not set(chosen) <= set(options):
        parser.error(f"--variants: 'default' and any of {', '.join(options)}")

    lines = payload_lines(args.round, 1)
    brokers = {name: Broker(options[name]) for name in chosen}
    rounds: dict[str, list[float]] = {name: [] for name in brokers}
    try:
        depth = 0
        while depth < args.messages:
            depth += args.round
            for name, broker in brokers.items():
                rounds[name].append(broker.publish(lines))
            log(f"queue {depth:>7}: " + ", ".join(f"{n} {r[-1]:.0f}/s" for n, r in rounds.items()))
        saves = sorted(broker.save_seconds() for broker in brokers.values())
        file_mb = brokers["default"].db_file.stat().st_size / 1e6
    finally:
        for broker in brokers.values():
            broker.close()

    # The overall rate: all messages over the time they took (harmonic mean of the rounds).
    overall = {name: len(r) / sum(1 / x for x in r) for name, r in rounds.items()}
    result: dict[str, object] = {
        "messages_queued_per_broker": depth,
        "persistence_file_mb_at_end": round(file_mb, 1),
    }
    for name in brokers:
        result[f"{name}_msg_per_s"] = round(overall[name])
    for name in brokers:
        if name != "default":
            result[f"{name}_vs_default"] = round(overall[name] / overall["default"], 3)
            result[f"{name}_last_round_vs_default"] = round(
                rounds[name][-1] / rounds["default"][-1], 3
            )
    result["one_save_s_at_end"] = round(saves[len(saves) // 2], 3)  # the median broker
    result["rounds_msg_per_s"] = {name: [round(x) for x in r] for name, r in rounds.items()}
    save_result("broker_persistence", result)


if __name__ == "__main__":
    main()
