"""`livelab-sim`: simulated live labs that publish telemetry to MQTT, and the delivery audit.

Exit status: 0 done (also after Ctrl-C, once outstanding messages are acknowledged), 1 the
broker could not be reached or did not acknowledge everything, or the audit found readings
missing or doubled, 2 usage error (also an invalid scenario or replay file), 3 the API could
not be reached for the audit, 130 aborted by a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from pydantic import ValidationError

from schemas.names import describe_bad_name, is_lab
from schemas.times import parse_rfc3339
from simulators import audit, loadgen, metrics
from simulators.cliargs import duration, positive_float
from simulators.durations import format_duration
from simulators.errors import SimulatorError
from simulators.faults import Faults
from simulators.manifest import Manifest
from simulators.models import DEFAULT_SEED
from simulators.replay import ReplayError
from simulators.runner import DEFAULT_HOST, DEFAULT_PORT, backfill, live, replay, resolve_labs
from simulators.scenario import (
    DEFAULT_SCENARIO,
    MODELS,
    Scenario,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
)

log = logging.getLogger("simulators")


def parse_time(text: str) -> datetime:
    """RFC 3339 with offset, 'now', or 'now-DURATION' (e.g. now-6h)."""
    text = text.strip()
    if text == "now" or text.startswith("now-"):
        now = datetime.now(UTC)
        return now - duration(text[4:]) if text != "now" else now
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; or use now / now-6h") from None


def _names(text: str) -> list[str]:
    return [n for n in (part.strip() for part in text.split(",")) if n]


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _batch(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: batch must be 1..10000")
    return int(text)


def _form(*allowed: str) -> Any:
    def parse(text: str) -> int | str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(allowed)}")
        return int(text) if text.isdigit() else text

    return parse


_FAULT_NAMES = list(Faults.model_fields)


def _fault(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in Faults.model_fields:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use NAME=VALUE with NAME one of {', '.join(_FAULT_NAMES)}"
        )
    if name == "malformed_kinds":
        return name, tuple(_names(value))
    return name, value.strip()


def _mqtt_arguments(
    m: argparse._ArgumentGroup,
    qos_help: str = "QoS of every message (default: each device's, from the scenario)",
) -> None:
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
    m.add_argument(
        "--qos",
        type=int,
        choices=(0, 1),
        help=qos_help,
    )
    m.add_argument(
        "--mqtt-version", choices=("3.1.1", "5"), default="3.1.1", help="default: %(default)s"
    )


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("scenario and data")
    g.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        metavar="NAME|FILE.toml",
        help="a built-in scenario (see `livelab-sim scenarios`) or a scenario file "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--lab",
        help="run the scenario's lab under this name (a one-lab scenario), or run only this "
        "lab of a scenario with several (default: the scenario's labs)",
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
        help="the same seed gives the same readings and faults (default: the scenario's)",
    )
    g.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a fault of every lab, overriding the scenario, e.g. --fault duplicate=0.01 "
        "--fault late_by=5m (repeatable). Faults: " + ", ".join(_FAULT_NAMES),
    )
    g.add_argument(
        "--ts-format",
        choices=("rfc3339", "ms"),
        default="rfc3339",
        help="how timestamps are written: RFC 3339 text or epoch milliseconds "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--record",
        metavar="FILE.csv",
        help="write every reading that should be stored as CSV: lab,device,sensor,time,value "
        "(time is RFC 3339 UTC; for form 1 messages it is the publish time, since the "
        "message carries none). Duplicates and malformed messages are not in it.",
    )
    g.add_argument(
        "--manifest",
        metavar="FILE.json",
        help="write what was sent (per series counts, rejections, faults, time range) for "
        "`livelab-sim audit` (also written when the run fails)",
    )
    _mqtt_arguments(common.add_argument_group("MQTT"))
    o = common.add_argument_group("output")
    o.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar or lines, only errors"
    )
    o.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve Prometheus metrics (messages and readings published) on "
        "http://127.0.0.1:PORT/metrics (default: off)",
    )
    v = common.add_argument_group("verify")
    v.add_argument(
        "--verify",
        action="store_true",
        help="after the run, ask the API whether every reading sent is stored exactly once "
        "(as `livelab-sim audit` does); exit 1 if not",
    )
    audit.add_arguments(common)
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog="livelab-sim",
        description="Simulate city live labs (by default Oceanhamnen, Helsingborg's H22 expo "
        "district) and publish their telemetry to MQTT topics livelab/{lab}/{device}/telemetry "
        "and .../senml; inject faults; check afterwards that the service stored everything.",
        epilog="Examples:\n"
        "  livelab-sim live --history 6h\n"
        "  livelab-sim live --scenario rehearsal --duration 600 --manifest run.json\n"
        "  livelab-sim backfill --start 2026-06-01T00:00:00Z --end 2026-06-08T00:00:00Z "
        "--verify --api-key llk_...\n"
        "  livelab-sim replay readings.csv --lab pilot-2 --speed 60\n"
        "  livelab-sim load --processes 2 --duration 30\n"
        "  livelab-sim audit --manifest run.json --api-key llk_...\n"
        "  livelab-sim check my-pilot.toml\n\n"
        "Exit status: 0 ok, 1 broker unreachable, messages unacknowledged or the audit failed,\n"
        "2 usage error or invalid scenario/replay file, 3 API unreachable for the audit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_live = sub.add_parser(
        "live",
        parents=[common],
        help="publish in real time (optionally after backfilling recent history)",
        description="Publish readings as they happen, every device on its own interval, until "
        "Ctrl-C (or SIGTERM) or --duration. On stop, sends what faults still hold back, waits "
        "for outstanding acknowledgements and prints a summary. Logs progress every 10 s.",
    )
    pace = p_live.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate",
        type=positive_float,
        metavar="MSGS_PER_S",
        help="total messages per second (sets every device's interval)",
    )
    pace.add_argument(
        "--interval",
        type=duration,
        metavar="DURATION",
        help="one message per device every DURATION (default: each device's, from the scenario)",
    )
    p_live.add_argument(
        "--history",
        type=duration,
        metavar="DURATION",
        help="first backfill this much history up to now (with timestamps), e.g. 6h",
    )
    p_live.add_argument(
        "--history-interval",
        type=duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="reading interval of the history (default: 60s)",
    )
    p_live.add_argument(
        "--form",
        type=_form("1", "2", "3", "senml"),
        help="telemetry form of every device: 1 values only (receive time), 2 with ts, "
        "3 arrays, senml (default: each device's, from the scenario)",
    )
    p_live.add_argument("--batch", type=_batch, metavar="N", help="form 3: instants per message")
    p_live.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until stopped)",
    )

    p_back = sub.add_parser(
        "backfill",
        parents=[common],
        help="publish a time range with original timestamps, as fast as the broker acks",
        description="Publish every reading in [--start, --end) with original timestamps, as "
        "fast as the broker acknowledges. Each device keeps its interval and form from the "
        "scenario unless --interval / --form say otherwise (form 1 devices send form 2). "
        "A progress bar (count, rate, ETA) goes to stderr, a summary to stdout.",
    )
    p_back.add_argument(
        "--start", type=parse_time, required=True, metavar="T", help="RFC 3339, now or now-6h"
    )
    p_back.add_argument(
        "--end", type=parse_time, required=True, metavar="T", help="exclusive; RFC 3339 or now"
    )
    p_back.add_argument(
        "--interval",
        type=duration,
        metavar="DURATION",
        help="time between readings of every device; times are multiples of it since the "
        "epoch (default: each device's, from the scenario)",
    )
    p_back.add_argument(
        "--form",
        type=_form("2", "3", "senml"),
        help="2: a message per device and instant; 3: arrays of --batch instants; senml "
        "(default: each device's)",
    )
    p_back.add_argument(
        "--batch",
        type=_batch,
        metavar="N",
        help="instants per form 3 message, also capped at 256 KiB (default: each device's)",
    )

    p_replay = sub.add_parser(
        "replay",
        parents=[common],
        help="publish the readings of a CSV file (e.g. a --record of an earlier run)",
        description="Publish the readings of a CSV file with columns lab,device,sensor,time,"
        "value (the --record format; --lab replaces or supplies the lab column). One message "
        "per device and instant, in time order, as fast as the broker acknowledges or at "
        "--speed times the original pace. --scenario/--devices/--sensors do not apply; "
        "--fault does (except bursts).",
    )
    p_replay.add_argument("file", metavar="FILE.csv", help="the readings to replay")
    p_replay.add_argument(
        "--speed",
        type=positive_float,
        metavar="FACTOR",
        help="pace: 1 = the original pace, 60 = an hour per minute (default: as fast as possible)",
    )
    p_replay.add_argument(
        "--form",
        type=_form("2", "3", "senml"),
        default=2,
        help="telemetry form (default: 2)",
    )
    p_replay.add_argument(
        "--batch", type=_batch, default=10, metavar="N", help="form 3: instants per message"
    )

    p_load = sub.add_parser(
        "load",
        help="publish single-reading messages as fast as possible (or at a rate), from "
        "several processes: a load generator for benchmarks",
        description="Publish single-reading form 2 messages to livelab/{lab}/load-P-N/telemetry "
        "as fast as the broker acknowledges (or at --rate), from --processes processes, and "
        "report the rate achieved. Every (device, time) is unique, so an audit of the "
        "manifest checks that each one was stored exactly once.",
    )
    _mqtt_arguments(p_load.add_argument_group("MQTT"), "QoS of every message (default: 1)")
    p_load.add_argument("--lab", default="load", help="lab name in the topics (default: load)")
    p_load.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")
    loadgen.add_arguments(p_load)

    p_audit = sub.add_parser(
        "audit",
        help="check with the API that a run's readings are stored exactly once",
        description="Read a run's --manifest, ask the API how many readings each series holds "
        "in the run's time range and how many rejections each lab has gained, print a "
        "per-series table, and exit 1 if a single reading is missing or doubled.",
    )
    p_audit.add_argument(
        "--manifest", required=True, metavar="FILE.json", help="written by a run's --manifest"
    )
    p_audit.add_argument("-q", "--quiet", action="store_true", help="only the table and errors")
    audit.add_arguments(p_audit)

    p_devices = sub.add_parser(
        "devices",
        parents=[common],
        help="list the devices and sensors of a scenario",
        description="List the scenario's devices: interval, form, sensors and units.",
    )
    p_scen = sub.add_parser(
        "scenarios", help="list the built-in scenarios", description="The built-in scenarios."
    )
    p_check = sub.add_parser(
        "check",
        help="validate a scenario file and summarise it",
        description="Validate a scenario file (exit 2 with every problem listed if it is "
        "invalid) and summarise its labs, devices, message rate and faults.",
    )
    p_check.add_argument("scenario", metavar="NAME|FILE.toml")
    p_models = sub.add_parser(
        "models",
        help="list the sensor models and their parameters",
        description="The sensor models a scenario can use, with their parameters.",
    )
    for p in (p_live, p_back, p_replay, p_load, p_audit, p_devices, p_scen, p_check, p_models):
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


def _describe_scenario(scenario: Scenario) -> str:
    lines = [f"{scenario.name}: {scenario.description}".rstrip(": "), f"  file: {scenario.source}"]
    for lab in scenario.labs:
        rate = sum(1 / d.interval.total_seconds() for d in lab.devices)
        series = sum(len(d.sensors) for d in lab.devices)
        lines.append(
            f"  lab {lab.name}: {len(lab.devices)} devices, {series} series, "
            f"about {rate:.2f} messages/s live"
        )
        active = [f"{k} {v:g}" for k, v in lab.faults.rates().items() if v]
        lines.append(f"    faults: {', '.join(active) if active else 'none'}")
    return "\n".join(lines)


def _print_devices(labs: Sequence[Any]) -> None:
    for lab in labs:
        print(f"lab {lab.name}: {lab.description}")
        for d in lab.devices:
            sensors = ", ".join(f"{s.name} ({s.unit})" for s in d.sensors)
            form = f"form {d.form}" if d.form != "senml" else "SenML"
            print(
                f"  {d.name:<12} every {format_duration(d.interval):>5}, {form:<7} "
                f"{d.description}: {sensors}"
            )


def _print_models() -> None:
    for name, cls in MODELS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        params = [
            f"{f.name}={f.default!r}"
            for f in dataclasses.fields(cls)
            if f.name != "name" and f.default is not dataclasses.MISSING
        ]
        print(f"{name:<15} {doc}\n{'':<15} parameters: {', '.join(params)}")


def _faults_arg(parser: argparse.ArgumentParser, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    faults = dict(pairs)
    if faults:
        try:
            Faults().with_rates(**faults)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            parser.error(f"--fault: {problems}")
    return faults


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args.subparser
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s livelab-sim: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per audit request
    if args.command == "scenarios":
        for path in builtin_scenarios().values():
            print(_describe_scenario(load_scenario(path)))
        return 0
    if args.command == "models":
        _print_models()
        return 0
    if args.command == "check":
        try:
            print(_describe_scenario(load_scenario(args.scenario)))
        except ScenarioError as exc:
            print(f"livelab-sim: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "audit":
        try:
            manifest = Manifest.load(args.manifest)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        return audit.run_audit(manifest, args)

    if args.lab is not None and not is_lab(args.lab):
        parser.error(f"--lab: {describe_bad_name('lab', args.lab)}")
    stop = threading.Event()
    if args.command == "load":
        _install_stop_handlers(stop)
        try:
            return loadgen.run_from_args(
                args,
                host=args.mqtt_host,
                port=args.mqtt_port,
                qos=1 if args.qos is None else args.qos,
                mqtt_version=args.mqtt_version,
                lab=args.lab,
                stop=stop,
            )
        except ValueError as exc:
            parser.error(str(exc))

    faults = _faults_arg(parser, args.fault)
    if args.command != "replay":
        try:
            scenario, labs = resolve_labs(
                args.scenario, args.lab, devices=args.devices, sensors=args.sensors,
                faults=faults,
            )  # fmt: skip
        except ScenarioError as exc:
            print(f"livelab-sim: {exc}", file=sys.stderr)
            return 2
        except ValueError as exc:
            parser.error(str(exc))
        if args.command == "devices":
            _print_devices(labs)
            return 0
    if args.verify and not args.api_key:
        parser.error("--verify needs an API key: --api-key KEY or LIVELAB_API_KEY")

    ts_format = "epoch_ms" if args.ts_format == "ms" else "rfc3339"
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
    manifest = Manifest(mode=args.command)
    common: dict[str, Any] = {
        "ts_format": ts_format,
        "record": args.record,
        "stop": stop,
        "host": args.mqtt_host,
        "port": args.mqtt_port,
        "mqtt_version": args.mqtt_version,
        "manifest": manifest,
    }
    progress: str | float = "off" if args.quiet else "bar"
    try:
        if args.command == "backfill":
            summary = backfill(
                args.lab, args.start, args.end, scenario=scenario, interval=args.interval,
                seed=args.seed, devices=args.devices, sensors=args.sensors, form=args.form,
                batch=args.batch, qos=args.qos, faults=faults, progress=progress, **common,
            )  # fmt: skip
        elif args.command == "replay":
            summary = replay(
                args.file, lab=args.lab, speed=args.speed, form=args.form, batch=args.batch,
                qos=1 if args.qos is None else args.qos, faults=faults,
                seed=DEFAULT_SEED if args.seed is None else args.seed, progress=progress, **common,
            )  # fmt: skip
        else:
            summary = live(
                args.lab, scenario=scenario, rate=args.rate, interval=args.interval,
                history=args.history, history_interval=args.history_interval, form=args.form,
                batch=args.batch, qos=args.qos, faults=faults, seed=args.seed,
                duration=args.duration, devices=args.devices, sensors=args.sensors, **common,
            )  # fmt: skip
    except ReplayError as exc:
        print(f"livelab-sim: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        parser.error(str(exc))
    except SimulatorError as exc:
        print(f"livelab-sim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livelab-sim: aborted; outstanding messages may be lost", file=sys.stderr)
        return 130
    finally:
        if args.manifest:
            manifest.save(args.manifest)
    print(summary)
    if args.verify:
        return audit.run_audit(manifest, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
