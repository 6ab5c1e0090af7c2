"""`livelab-sim`: publish a simulated live lab (Oceanhamnen) to MQTT.

Exit status: 0 done (also after Ctrl-C, once outstanding messages are acknowledged), 1 the
broker could not be reached or did not acknowledge everything, 2 usage error, 130 aborted by
a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType

from schemas.names import is_lab
from schemas.telemetry import TsFormat
from schemas.times import parse_rfc3339
from simulators import metrics
from simulators.demo import lab_spec
from simulators.errors import SimulatorError
from simulators.generator import DEFAULT_SEED
from simulators.messages import DEFAULT_BATCH
from simulators.runner import DEFAULT_HOST, DEFAULT_PORT, backfill, live

log = logging.getLogger("simulators")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """'90' or '90s', '15m', '6h', '2d', '1w', '1h30m', '500ms' -> a positive timedelta."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration (e.g. 90s, 15m, 6h, 2d, 1h30m)"
            )
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be positive")
    return timedelta(seconds=seconds)


def parse_time(text: str) -> datetime:
    """RFC 3339 with offset, 'now', or 'now-DURATION' (e.g. now-6h)."""
    text = text.strip()
    if text == "now" or text.startswith("now-"):
        now = datetime.now(UTC)
        return now - parse_duration(text[4:]) if text != "now" else now
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; or use now / now-6h") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _names(text: str) -> list[str]:
    return [n for n in (part.strip() for part in text.split(",")) if n]


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _batch(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: batch must be 1..10000 readings")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("lab and data")
    g.add_argument(
        "--lab", default="oceanhamnen", help="lab name in the topics (default: %(default)s)"
    )
    g.add_argument(
        "--devices",
        type=_names,
        action="extend",
        metavar="DEV[,DEV...]",
        help="publish only these devices (repeatable; default: all; see `livelab-sim devices`)",
    )
    g.add_argument(
        "--sensors",
        type=_names,
        action="extend",
        metavar="NAME[,NAME...]",
        help="publish only these sensors, e.g. no2,level (default: all)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="the same seed gives the same readings (default: %(default)s)",
    )
    g.add_argument(
        "--ts-format",
        choices=("rfc3339", "ms"),
        default="rfc3339",
        help="how form 2/3 write 'ts': RFC 3339 text or epoch milliseconds (default: %(default)s)",
    )
    g.add_argument(
        "--record",
        metavar="FILE.csv",
        help="write every reading published as CSV: lab,device,sensor,time,value "
        "(time is RFC 3339 UTC; for form 1 messages it is the publish time, since the "
        "message carries none)",
    )
    m = common.add_argument_group("MQTT")
    m.add_argument(
        "--mqtt-host",
        default=os.environ.get("LIVELAB_MQTT_HOST", DEFAULT_HOST),
        help="broker host (env LIVELAB_MQTT_HOST; default: %(default)s)",
    )
    m.add_argument(
        "--mqtt-port",
        type=_port,
        default=os.environ.get("LIVELAB_MQTT_PORT", str(DEFAULT_PORT)),
        help="broker port (env LIVELAB_MQTT_PORT; default: %(default)s)",
    )
    m.add_argument("--qos", type=int, choices=(0, 1), default=1, help="default: %(default)s")
    m.add_argument(
        "--mqtt-version", choices=("3.1.1", "5"), default="3.1.1", help="default: %(default)s"
    )
    o = common.add_argument_group("output")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only errors")
    o.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve Prometheus metrics (messages and readings published) on "
        "http://127.0.0.1:PORT/metrics (default: off)",
    )

    parser = argparse.ArgumentParser(
        prog="livelab-sim",
        description="Simulate a city live lab (the Oceanhamnen demo district, Helsingborg) "
        "and publish its telemetry to MQTT topics livelab/{lab}/{device}/telemetry.",
        epilog="Examples:\n"
        "  livelab-sim live --lab oceanhamnen --history 6h\n"
        "  livelab-sim live --rate 20 --duration 60 --form 2\n"
        "  livelab-sim backfill --start 2026-06-01T00:00:00Z --end 2026-06-02T00:00:00Z "
        "--interval 60s --record out.csv\n"
        "  livelab-sim devices\n\n"
        "Exit status: 0 ok, 1 broker unreachable or messages unacknowledged, 2 usage error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_live = sub.add_parser(
        "live",
        parents=[common],
        help="publish in real time (optionally after backfilling recent history)",
        description="Publish readings as they happen, one device's readings per message, "
        "devices in turn, until Ctrl-C (or SIGTERM) or --duration. On stop, waits for "
        "outstanding acknowledgements and prints a summary. Logs progress every 10 s.",
    )
    pace = p_live.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate", type=_positive_float, metavar="MSGS_PER_S", help="total messages per second"
    )
    pace.add_argument(
        "--interval",
        type=parse_duration,
        metavar="DURATION",
        help="one message per device every DURATION (default: 10s)",
    )
    p_live.add_argument(
        "--history",
        type=parse_duration,
        metavar="DURATION",
        help="first backfill this much history up to now (form 2), e.g. 6h",
    )
    p_live.add_argument(
        "--history-interval",
        type=parse_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="reading interval of the history (default: 60s)",
    )
    p_live.add_argument(
        "--form",
        type=int,
        choices=(1, 2, 3),
        default=1,
        help="telemetry form: 1 values only (receive time), 2 with ts, 3 array (default: 1)",
    )
    p_live.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until stopped)",
    )

    p_back = sub.add_parser(
        "backfill",
        parents=[common],
        help="publish a time range with original timestamps, as fast as the broker acks",
        description="Publish every reading in [--start, --end) at --interval with original "
        "timestamps, as fast as the broker acknowledges. Progress (count, rate, ETA) goes to "
        "stderr, a summary to stdout.",
    )
    p_back.add_argument(
        "--start", type=parse_time, required=True, metavar="T", help="RFC 3339, now or now-6h"
    )
    p_back.add_argument(
        "--end", type=parse_time, required=True, metavar="T", help="exclusive; RFC 3339 or now"
    )
    p_back.add_argument(
        "--interval",
        type=parse_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="time between readings of a series; times are multiples of it (default: 60s)",
    )
    p_back.add_argument(
        "--form",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: a message per device and instant; 3: arrays of --batch readings (default: 2)",
    )
    p_back.add_argument(
        "--batch",
        type=_batch,
        default=DEFAULT_BATCH,
        metavar="N",
        help="readings per form 3 message, also capped at 256 KiB (default: %(default)s)",
    )

    p_devices = sub.add_parser(
        "devices",
        help="list the devices and sensors of the lab",
        parents=[common],
        description="List the simulated devices and their sensors (with units).",
    )
    for p in (p_live, p_back, p_devices):
        p.set_defaults(subparser=p)  # so usage errors show the subcommand's usage
    return parser


def _install_stop_handlers(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning(
            "%s: stopping after outstanding messages are acknowledged (again to abort)",
            signal.Signals(signum).name,
        )
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args.subparser
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s livelab-sim: %(message)s",
        stream=sys.stderr,
    )
    if not is_lab(args.lab):
        parser.error(f"--lab {args.lab!r}: 1-64 of a-z 0-9 _ -, starting with a letter or digit")
    try:
        spec = lab_spec(args.lab).select(args.devices, args.sensors)
    except ValueError as exc:
        parser.error(str(exc))

    if args.command == "devices":
        for device in spec.devices:
            sensors = ", ".join(f"{s.name} ({s.unit})" for s in device.sensors)
            print(f"{device.name:<12} {device.description}: {sensors}")
        return 0

    ts_format: TsFormat = "epoch_ms" if args.ts_format == "ms" else "rfc3339"
    if args.command == "backfill" and args.start >= args.end:
        parser.error("--start must be before --end")

    stop = threading.Event()
    _install_stop_handlers(stop)
    if args.metrics_port:
        try:
            metrics.serve(args.metrics_port)
        except OSError as exc:
            print(
                f"livelab-sim: cannot serve metrics on port {args.metrics_port}: {exc}",
                file=sys.stderr,
            )
            return 2
    try:
        if args.command == "backfill":
            summary = backfill(
                args.lab,
                args.start,
                args.end,
                interval=args.interval,
                seed=args.seed,
                form=args.form,
                batch=args.batch,
                ts_format=ts_format,
                record=args.record,
                stop=stop,
                spec=spec,
                host=args.mqtt_host,
                port=args.mqtt_port,
                qos=args.qos,
                mqtt_version=args.mqtt_version,
            )
        else:
            summary = live(
                args.lab,
                rate=args.rate,
                interval=args.interval,
                history=args.history,
                history_interval=args.history_interval,
                form=args.form,
                ts_format=ts_format,
                seed=args.seed,
                duration=args.duration,
                record=args.record,
                stop=stop,
                spec=spec,
                host=args.mqtt_host,
                port=args.mqtt_port,
                qos=args.qos,
                mqtt_version=args.mqtt_version,
            )
    except SimulatorError as exc:
        print(f"livelab-sim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livelab-sim: aborted; outstanding messages may be lost", file=sys.stderr)
        return 130
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
