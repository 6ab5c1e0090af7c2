"""`livelab-sim`: simulated live labs that publish telemetry to MQTT, and the delivery audit.
The exit statuses are in the epilog of ``livelab-sim --help``."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import click
import prometheus_client
from pydantic import ValidationError

from schemas.names import describe_bad_name, is_lab
from schemas.times import parse_rfc3339
from simulators import audit, loadgen, runner
from simulators.durations import format_duration, parse_duration
from simulators.errors import ScenarioError, SimulatorError, describe_errors
from simulators.faults import Faults
from simulators.manifest import Manifest
from simulators.models import MODELS
from simulators.options import RunOptions, SimSettings
from simulators.replay import ReplayError
from simulators.scenario import DEFAULT_SCENARIO, Scenario, builtin_scenarios, load_scenario

log = logging.getLogger("simulators")
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


settings = functools.cache(SimSettings)  # read once, when a default is first needed


def _duration(ctx: Any, param: Any, value: str | None) -> timedelta | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _time(ctx: Any, param: Any, value: str) -> datetime:
    """RFC 3339 with offset, 'now', or 'now-DURATION' (e.g. now-6h)."""
    text = value.strip()
    try:
        if text == "now" or text.startswith("now-"):
            now = datetime.now(UTC)
            return now - parse_duration(text[4:]) if text != "now" else now
        return parse_rfc3339(text)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; or use now / now-6h") from None


def _names(ctx: Any, param: Any, values: Sequence[str]) -> list[str] | None:
    names = [n.strip() for text in values for n in text.split(",") if n.strip()]
    return names or None


def _faults(ctx: Any, param: Any, values: Sequence[str]) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    for text in values:
        name, sep, value = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in Faults.model_fields:
            known = ", ".join(Faults.model_fields)
            raise click.BadParameter(f"{text!r}: use NAME=VALUE with NAME one of {known}")
        split = tuple(v.strip() for v in value.split(",") if v.strip())
        faults[name] = split if name == "malformed_kinds" else value.strip()
    try:
        Faults().with_rates(**faults)
    except ValidationError as exc:
        raise click.BadParameter("; ".join(describe_errors(exc))) from None
    return faults


def _lab(ctx: Any, param: Any, value: str | None) -> str | None:
    if value is not None and not is_lab(value):
        raise click.BadParameter(describe_bad_name("lab", value))
    return value


def _form(ctx: Any, param: Any, value: str | None) -> Any:
    return int(value) if value is not None and value.isdigit() else value


def _options(*decorators: Decorator) -> Decorator:
    """One decorator that applies all of `decorators`, the first outermost (click's order)."""
    return lambda f: functools.reduce(lambda g, d: d(g), reversed(decorators), f)


_opt = click.option
POSITIVE = click.FloatRange(0, math.inf, min_open=True, max_open=True)
DURATION: dict[str, Any] = {"callback": _duration, "metavar": "DURATION"}
SCENARIO = _options(
    _opt("--scenario", default=DEFAULT_SCENARIO, show_default=True, metavar="NAME|FILE.toml",
         help="a built-in scenario (see `livelab-sim scenarios`) or a scenario file"),
    _opt("--lab", callback=_lab, help="run the scenario's lab under this name (a one-lab "
         "scenario), or only this lab of a scenario with several"),
)  # fmt: skip
MQTT = _options(
    _opt("--mqtt-host", "host", default=lambda: settings().mqtt_host,
         show_default="LIVELAB_MQTT_HOST or 127.0.0.1", help="broker host"),
    _opt("--mqtt-port", "port", type=click.IntRange(1, 65535), default=lambda: settings().mqtt_port,
         show_default="LIVELAB_MQTT_PORT or 1883", help="broker port"),
    _opt("--qos", type=click.IntRange(0, 1), help="QoS of every message (default: each device's)"),
    _opt("--mqtt-version", type=click.Choice(["3.1.1", "5"]), default="3.1.1", show_default=True),
)  # fmt: skip
AUDIT = _options(
    _opt("--api-url", default=lambda: settings().api_url, show_default="LIVELAB_API_URL or "
         "http://127.0.0.1:8000", help="the livelab API"),
    _opt("--api-key", default=lambda: settings().api_key, help="a key that may read the run's "
         "labs (or LIVELAB_API_KEY; `livelab-api create-key --name audit --lab LAB` makes one)"),
    _opt("--wait", type=click.FloatRange(0, max_open=True), default=audit.DEFAULT_WAIT,
         show_default=True, help="keep asking while ingest catches up, until no count changed "
         "for this many seconds"),
    _opt("--strict-rejections", is_flag=True, help="more rejections than injected fail the audit "
         "(by default a note: a message redelivered after a worker crash is rejected twice)"),
    _opt("--json", "json_path", metavar="FILE", help="also write the report as JSON to FILE"),
)  # fmt: skip
RUN = _options(
    SCENARIO,
    _opt("--devices", multiple=True, callback=_names, metavar="DEV[,DEV...]",
         help="publish only these devices (repeatable; see `livelab-sim devices`)"),
    _opt("--sensors", multiple=True, callback=_names, metavar="NAME[,NAME...]",
         help="publish only these sensors, e.g. no2,level"),
    _opt("--seed", type=int, help="the same seed gives the same readings and faults "
         "(default: the scenario's)"),
    _opt("--fault", "faults", multiple=True, callback=_faults, metavar="NAME=VALUE",
         help="set a fault of every lab, e.g. --fault duplicate=0.01 --fault late_by=5m "
         "(repeatable). Faults: " + ", ".join(Faults.model_fields)),
    _opt("--ts-format", type=click.Choice(["rfc3339", "ms"]), default="rfc3339",
         show_default=True, callback=lambda ctx, param, v: "epoch_ms" if v == "ms" else v,
         help="timestamps as RFC 3339 text or epoch milliseconds"),
    _opt("--record", metavar="FILE.csv", help="write every reading that should be stored as "
         "CSV: lab,device,sensor,time,value (for form 1 the time is the publish time)"),
    _opt("--manifest", metavar="FILE.json", help="write what was sent, for `livelab-sim audit` "
         "(also written when the run fails)"),
    MQTT,
    _opt("-q", "--quiet", is_flag=True, help="no progress, only errors and the summary"),
    _opt("--metrics-port", type=int, default=0, metavar="PORT", help="serve Prometheus metrics "
         "on http://127.0.0.1:PORT/metrics (default: off)"),
    _opt("--verify", is_flag=True, help="after the run, audit it as `livelab-sim audit` does; "
         "exit 1 if a reading is missing or doubled"),
    AUDIT,
)  # fmt: skip
AUDIT_ARGS = ("api_url", "api_key", "wait", "strict_rejections", "json_path")  # of run_audit
BATCH = _opt("--batch", type=click.IntRange(1, 10_000), metavar="N", help="form 3: instants per "
             "message, also capped at 256 KiB (default: each device's)")  # fmt: skip


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit status: 0 ok (also after Ctrl-C, once outstanding messages are acknowledged), "
    "1 broker unreachable, messages unacknowledged or the audit failed, 2 usage error or "
    "invalid scenario/replay file, 3 API unreachable for the audit, 130 a second Ctrl-C.",
)
def cli() -> None:
    """Simulate city live labs (by default Oceanhamnen, Helsingborg's H22 expo district),
    publish their telemetry to MQTT, inject faults, and audit what the service stored."""


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        what = "stopping after outstanding messages are acknowledged (again to abort)"
        log.warning("%s: %s", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


def _logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO  # to stderr
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s livelab-sim: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per audit request


@contextlib.contextmanager
def _exit_status() -> Iterator[None]:
    """The errors of a command as its exit status (see the epilog), with the message."""
    try:
        yield
    except (ReplayError, ScenarioError) as exc:
        click.echo(f"livelab-sim: {exc}", err=True)
        sys.exit(2)
    except (ValueError, OSError) as exc:  # OSError: a file named on the command line
        raise click.UsageError(str(exc)) from None
    except SimulatorError as exc:
        click.echo(f"livelab-sim: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("livelab-sim: aborted; outstanding messages may be lost", err=True)
        sys.exit(130)


def _given(cls: Any, p: dict[str, Any]) -> dict[str, Any]:
    """The command line's values for the fields of dataclass `cls` (None: its default)."""
    return {f.name: p[f.name] for f in dataclasses.fields(cls) if p.get(f.name) is not None}


def _run(mode: str, p: dict[str, Any], call: Callable[[RunOptions], runner.Summary]) -> None:
    """Set up (logging, signals, metrics), run `call`, save the manifest, audit if asked."""
    _logging(p["quiet"])
    if p["verify"] and not p["api_key"]:
        raise click.UsageError("--verify needs an API key: --api-key KEY or LIVELAB_API_KEY")
    if port := p["metrics_port"]:
        try:
            prometheus_client.start_http_server(port, addr="127.0.0.1")
        except OSError as exc:
            raise click.UsageError(f"cannot serve metrics on port {port}: {exc}") from None
    manifest = Manifest(mode=mode)
    given = _given(RunOptions, {**p, "manifest": manifest})
    options = RunOptions(**given, stop=_stop_on_signals(), progress=not p["quiet"])
    try:
        with _exit_status():
            summary = call(options)
    finally:
        if p["manifest"]:
            manifest.save(p["manifest"])
    click.echo(summary)
    if p["verify"]:
        sys.exit(audit.run_audit(manifest, **{k: p[k] for k in AUDIT_ARGS}))


LIVE = _options(
    _opt("--rate", type=POSITIVE, metavar="MSGS_PER_S", help="total messages per second (sets "
         "every device's interval)"),
    _opt("--interval", **DURATION, help="one message per device every DURATION (default: each "
         "device's)"),
    _opt("--history", **DURATION, help="first backfill this much history up to now, e.g. 6h"),
    _opt("--history-interval", default="60s", **DURATION, show_default=True,
         help="reading interval of the history"),
    _opt("--form", type=click.Choice(["1", "2", "3", "senml"]), callback=_form,
         help="telemetry form of every device (default: each device's)"),
    BATCH,
    _opt("--duration", type=POSITIVE, metavar="SECONDS", help="stop after this many seconds "
         "(default: run until stopped)"),
)  # fmt: skip
BACKFILL = _options(
    _opt("--start", required=True, callback=_time, metavar="T", help="RFC 3339, now or now-6h"),
    _opt("--end", required=True, callback=_time, metavar="T", help="exclusive; RFC 3339 or now"),
    _opt("--interval", **DURATION, help="time between readings of every device; times are "
         "multiples of it since the epoch (default: each device's)"),
    _opt("--form", type=click.Choice(["2", "3", "senml"]), callback=_form, help="2: a message "
         "per device and instant; 3: arrays of --batch instants; senml (default: each "
         "device's; 1 sends 2)"),
    BATCH,
)  # fmt: skip
REPLAY = _options(
    _opt("--speed", type=POSITIVE, metavar="FACTOR", help="1 = the original pace, 60 = an hour "
         "per minute (default: as fast as possible)"),
    _opt("--form", type=click.Choice(["2", "3", "senml"]), default="2", show_default=True,
         callback=_form),
    _opt("--batch", type=click.IntRange(1, 10_000), default=10, show_default=True,
         metavar="N", help="form 3: instants per message"),
)  # fmt: skip
LOAD = _options(
    MQTT,
    _opt("--lab", default="load", show_default=True, callback=_lab, help="lab in the topics"),
    _opt("--processes", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
         help="publishing processes, each with its own connection; 1 publishes from this one"),
    _opt("--messages", type=click.IntRange(min=1), metavar="N", help="publish N messages in "
         "total (give this or --duration)"),
    _opt("--duration", type=POSITIVE, metavar="SECONDS", help="publish for this many seconds "
         "(give this or --messages)"),
    _opt("--rate", type=POSITIVE, metavar="MSGS_PER_S", help="total messages per second, on a "
         "steady schedule (default: as fast as the broker acknowledges)"),
    _opt("--devices", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
         help="series in total: devices load-PP-NNNN, sensor 'load', one reading a message"),
    _opt("--manifest", metavar="FILE", help="write what was sent, for `livelab-sim audit`"),
    _opt("-q", "--quiet", is_flag=True, help="only errors and the summary"),
)  # fmt: skip


@cli.command()
@RUN
@LIVE
def live(**p: Any) -> None:
    """Publish in real time, every device on its own interval, until Ctrl-C (or SIGTERM) or
    --duration; then send what faults still hold back, wait for every acknowledgement and
    print a summary. Logs progress every 10 s."""
    given = {k: p[k] for k in ("rate", "history", "history_interval", "duration")}
    _run("live", p, lambda o: runner.live(o, **given))


@cli.command()
@RUN
@BACKFILL
def backfill(**p: Any) -> None:
    """Publish every reading in [--start, --end) with original timestamps, as fast as the
    broker acknowledges. Progress (count, rate, ETA) goes to stderr, a summary to stdout."""
    _run("backfill", p, lambda o: runner.backfill(p["start"], p["end"], o))


@cli.command()
@click.argument("file", metavar="FILE.csv")
@RUN
@REPLAY
def replay(**p: Any) -> None:
    """Publish the readings of a CSV file with columns lab,device,sensor,time,value (the
    --record format; --lab replaces or supplies the lab), one message per device and instant,
    in time order. --scenario, --devices and --sensors do not apply; --fault does (no
    bursts)."""
    _run("replay", p, lambda o: runner.replay(p["file"], o, speed=p["speed"]))


@cli.command()
@LOAD
def load(**p: Any) -> None:
    """Publish single-reading form 2 messages to livelab/{lab}/load-PP-NNNN/telemetry as fast
    as the broker acknowledges (or at --rate) from --processes processes, and report the rate.
    Every (device, time) is unique, so an audit of the manifest checks exactly-once storage."""
    _logging(p["quiet"])
    with _exit_status():
        every = None if p["quiet"] else 5.0
        options = loadgen.LoadOptions(**_given(loadgen.LoadOptions, p), progress_every=every)
        click.echo(loadgen.run_load(options, _stop_on_signals()))


@cli.command(name="audit")
@_opt("--manifest", required=True, metavar="FILE.json", help="written by a run's --manifest")
@_opt("-q", "--quiet", is_flag=True, help="only the table and errors")
@AUDIT
def audit_cmd(**p: Any) -> None:
    """Read a run's manifest, ask the API how many readings each series holds in the run's
    range and how many rejections each lab gained, print a per-series table; exit 1 if a
    single reading is missing or doubled."""
    _logging(p["quiet"])
    with _exit_status():
        manifest = Manifest.load(p["manifest"])
    sys.exit(audit.run_audit(manifest, **{k: p[k] for k in AUDIT_ARGS}))


def _describe(scenario: Scenario) -> str:
    lines = [f"{scenario.name}: {scenario.description}".rstrip(": "), f"  file: {scenario.source}"]
    for lab in scenario.labs:
        rate = sum(1 / d.interval.total_seconds() for d in lab.devices)
        series = sum(len(d.sensors) for d in lab.devices)
        what = f"{len(lab.devices)} devices, {series} series, about {rate:.2f} messages/s live"
        lines.append(f"  lab {lab.name}: {what}")
        active = [f"{k} {v:g}" for k, v in lab.faults.rates().items() if v]
        lines.append(f"    faults: {', '.join(active) if active else 'none'}")
    return "\n".join(lines)


@cli.command()
@SCENARIO
def devices(scenario: str, lab: str | None) -> None:
    """List the scenario's devices: interval, form, sensors and units."""
    with _exit_status():
        labs = runner.resolve_labs(RunOptions(scenario=scenario, lab=lab)).labs
    for spec in labs:
        click.echo(f"lab {spec.name}: {spec.description}")
        for d in spec.devices:
            sensors = ", ".join(f"{s.name} ({s.unit})" for s in d.sensors)
            form = f"form {d.form}" if d.form != "senml" else "SenML"
            every = format_duration(d.interval)
            click.echo(f"  {d.name:<12} every {every:>5}, {form:<7} {d.description}: {sensors}")


@cli.command()
def scenarios() -> None:
    """List the built-in scenarios."""
    for path in builtin_scenarios().values():
        click.echo(_describe(load_scenario(path)))


@cli.command()
@click.argument("scenario", metavar="NAME|FILE.toml")
def check(scenario: str) -> None:
    """Validate a scenario file (exit 2 with every problem listed if it is invalid) and
    summarise its labs, devices, message rate and faults."""
    with _exit_status():
        click.echo(_describe(load_scenario(scenario)))


@cli.command()
def models() -> None:
    """List the sensor models a scenario can use, with their parameters."""
    for name, cls in MODELS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        fields = [f for f in dataclasses.fields(cls)[1:] if f.default is not dataclasses.MISSING]
        params = ", ".join(f"{f.name}={f.default!r}" for f in fields)  # all but the name
        click.echo(f"{name:<15} {doc}\n{'':<15} parameters: {params}")


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command line, return its exit status."""
    try:
        cli.main(args=argv, prog_name="livelab-sim", standalone_mode=False)
        return 0
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("livelab-sim: aborted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
