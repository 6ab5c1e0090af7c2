"""Simulator benchmark: how close does the load generator come to what the broker can take?

Measured in one run, on one machine, against the same Mosquitto, N single-reading QoS 1
messages each (MQTT 3.1.1), every run with a ``mosquitto_sub -q 1`` receiving the messages:

- ceiling "broker": ``mosquitto_pub -l -q 1`` (Mosquitto's own C client, one process at a
  time) to ``mosquitto_sub -C N``, messages/s until the subscriber has them all. The lines go
  to ``mosquitto_pub`` in runs of 50,000: past 65,535 messages (mosquitto_pub 2.0.11, line
  mode) the message ids wrap and it disconnects early, at the first acknowledgement whose id
  equals its last one, dropping the rest without an error;
- "publisher": our `Publisher` alone, a tight loop on one precomputed payload (no payload
  generation): the cost of the MQTT client, messages/s until every PUBACK is in;
- livelab: ``run_load(processes=1, messages=N)`` and ``processes=2``, payloads generated per
  message: messages/s until every PUBACK is in (what `LoadResult` reports) and until the
  subscriber has them all; and the ratios of both to the ceiling.

Run: ``.venv/bin/python -m bench.simulator`` (``--help`` for options). Writes a JSON summary
to bench/results/. Figures vary with the machine's load (and the publishers, the subscriber
and Mosquitto share its CPUs): compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from datetime import UTC, datetime

from bench.common import Subscriber, add_broker_arguments, broker_ceiling, log, save_result
from simulators.loadgen import DAY_MS, PAYLOAD, LoadOptions, run_load
from simulators.publisher import Publisher


def payload_lines(n: int) -> list[bytes]:
    """N payloads shaped like the load generator's, for ``mosquitto_pub -l``."""
    base = int(time.time()) * 1000 - DAY_MS
    return [PAYLOAD % (base + i, i % 1000) + b"\n" for i in range(n)]


def publisher_only(host: str, port: int, n: int) -> float:
    topic = f"bench/{secrets.token_hex(4)}/x/telemetry"
    payload = b'{"ts":1780000000000,"values":{"load":417}}'
    with Publisher(host=host, port=port, qos=1) as pub:
        publish = pub.publish
        started = time.perf_counter()
        for _ in range(n):
            publish(topic, payload)
        pub.wait_all()
        return n / (time.perf_counter() - started)


def load(host: str, port: int, n: int, processes: int, devices: int) -> dict[str, float]:
    lab = f"bench{secrets.token_hex(3)}"
    sub = Subscriber(host, port, f"livelab/{lab}/#", n)
    options = LoadOptions(
        lab=lab, processes=processes, messages=n, devices=devices, host=host, port=port,
        progress_every=3600,
    )  # fmt: skip
    result = run_load(options)
    delivered = n / (sub.wait() - min(p.started for p in result.processes))
    return {"acked": result.rate, "delivered": delivered}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--messages", type=int, default=200_000, help="messages per run (default %(default)s)"
    )
    parser.add_argument(
        "--devices", type=int, default=100, help="series of the load runs (default %(default)s)"
    )
    add_broker_arguments(parser)
    args = parser.parse_args(argv)
    n, host, port = args.messages, args.mqtt_host, args.mqtt_port

    log(f"broker ceiling: {n} QoS 1 messages, mosquitto_pub -> mosquitto_sub")
    ceiling = broker_ceiling(host, port, payload_lines(n))
    log(f"publisher alone: {n} messages, one payload, no subscriber")
    bare = publisher_only(host, port, n)
    log(f"load generator, 1 process: {n} messages")
    one = load(host, port, n, 1, args.devices)
    log(f"load generator, 2 processes: {n} messages")
    two = load(host, port, n, 2, args.devices)

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": n,
        "devices": args.devices,
        "broker_msgs_per_s": round(ceiling),
        "publisher_alone_msgs_per_s": round(bare),
        "load_1_process_msgs_per_s": round(one["acked"]),
        "load_1_process_delivered_msgs_per_s": round(one["delivered"]),
        "load_2_processes_msgs_per_s": round(two["acked"]),
        "load_2_processes_delivered_msgs_per_s": round(two["delivered"]),
        "ratio_1_process_to_broker": round(one["acked"] / ceiling, 3),
        "ratio_2_processes_to_broker": round(two["acked"] / ceiling, 3),
        "ratio_1_process_delivered_to_broker": round(one["delivered"] / ceiling, 3),
        "ratio_2_processes_delivered_to_broker": round(two["delivered"] / ceiling, 3),
        "cpus": os.cpu_count(),
    }
    save_result("simulator", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
