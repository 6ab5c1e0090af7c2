"""Simulated labs (`LabSpec`, its `Device`s, their sensor models and publishing settings; a lab
spec can run under any lab name) and the scenario files that describe them.

A scenario file (TOML; the built-ins in ``scenarios/`` are the examples) has ``[scenario]``
name and seed, ``[defaults]`` for devices, ``[faults]``, and ``[[labs]]`` of
``[[labs.devices]]`` (``count`` with a ``{i}`` name template) with their ``sensors`` (a name,
a model of `MODELS` and its parameters). `load_scenario` raises `ScenarioError` naming the
file, the place (``labs[0].devices[2].sensors[1].model``) and the problem, for every one."""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, get_type_hints

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.names import describe_bad_name, is_device, is_lab, is_sensor
from schemas.telemetry import MAX_READINGS_PER_MESSAGE
from simulators.durations import Duration
from simulators.errors import ScenarioError, describe_errors
from simulators.faults import Faults
from simulators.models import DEFAULT_SEED, MODELS, SensorModel

BUILTIN_DIR = Path(__file__).parent / "scenarios"
DEFAULT_SCENARIO = "oceanhamnen"
MAX_DEVICES = 100_000
Form: TypeAlias = Literal[1, 2, 3, "senml"]


@dataclass(frozen=True)
class Device:
    """A device of the lab and the sensors it reports in each message."""

    name: str
    kind: str
    description: str
    sensors: tuple[SensorModel, ...]
    interval: timedelta = timedelta(seconds=60)  # time between two messages of the device
    form: Form = 2  # telemetry form 1, 2, 3 or "senml"
    qos: int = 1
    batch: int = 10  # form 3: instants per message

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensors)


@dataclass(frozen=True)
class LabSpec:
    """A simulated lab: its devices, in publishing order."""

    name: str
    description: str
    devices: tuple[Device, ...]
    faults: Faults = field(default_factory=Faults)

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    def select(
        self, devices: Sequence[str] | None = None, sensors: Sequence[str] | None = None
    ) -> LabSpec:
        """The same lab with only the given devices and sensors (None: all), a device left with
        no sensor dropped; ValueError naming what is unknown."""
        chosen = list(self.devices)
        for kind, wanted, known in (
            ("device", devices, self.device_names),
            ("sensor", sensors, sorted({s for d in self.devices for s in d.sensor_names})),
        ):
            if unknown := [x for x in wanted or () if x not in known]:
                raise ValueError(
                    f"unknown {kind}(s) {', '.join(unknown)} in lab {self.name!r}; "
                    f"known: {', '.join(known)}"
                )
        if devices is not None:
            chosen = [d for d in chosen if d.name in devices]
        if sensors is not None:
            chosen = [
                replace(d, sensors=tuple(s for s in d.sensors if s.name in sensors)) for d in chosen
            ]
            chosen = [d for d in chosen if d.sensors]
        if not chosen:
            raise ValueError("the selection leaves no device with a sensor")
        return replace(self, devices=tuple(chosen))

    def renamed(self, name: str) -> LabSpec:
        return replace(self, name=name)

    def with_devices(self, **changes: object) -> LabSpec:
        """Every device with `changes` applied (e.g. interval=..., form=...); None: unchanged."""
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        return replace(self, devices=tuple(replace(d, **given) for d in self.devices))  # type: ignore[arg-type]


def _repeated(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    return sorted(name for name, n in Counter(names).items() if n > 1)


def _named(kind: str, ok: Callable[[str], bool]) -> AfterValidator:
    """A name field: `ok(name)`, else the rules for a `kind` name."""

    def check(name: str) -> str:
        if not ok(name):
            raise ValueError(describe_bad_name(kind, name))
        return name

    return AfterValidator(check)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_model(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return name


class SensorConfig(BaseModel):
    """One sensor: its name, model and the model's parameters (any other key)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, _named("sensor", is_sensor)]
    model: Annotated[str, AfterValidator(_known_model)]

    @model_validator(mode="after")
    def _known_params(self) -> SensorConfig:
        params = dict(self.model_extra or {})
        known = {f.name for f in fields(MODELS[self.model])} - {"name"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(
                f"model {self.model!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters: {', '.join(sorted(known))}"
            )
        try:
            self.build()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad parameters for model {self.model!r}: {exc}") from None
        return self

    def build(self) -> SensorModel:
        model_cls, params = MODELS[self.model], dict(self.model_extra or {})
        types = get_type_hints(model_cls)
        for key, value in params.items():  # strict: no bools for numbers, no numbers for text
            try:
                pydantic.TypeAdapter(types[key]).validate_python(value, strict=True)
            except ValidationError as exc:
                raise ValueError(f"{key}: {exc.errors()[0]['msg']}, not {value!r}") from None
        return model_cls(name=self.name, **params)


class DeviceDefaults(_Strict):
    interval: Duration = timedelta(seconds=60)
    form: Form = 2
    qos: Literal[0, 1] = 1
    batch: int = Field(default=10, ge=1, le=MAX_READINGS_PER_MESSAGE)


class DeviceConfig(_Strict):
    name: str
    count: int = Field(default=1, ge=1, le=MAX_DEVICES)
    kind: str = ""
    description: str = ""
    interval: Duration | None = None
    form: Form | None = None
    qos: Literal[0, 1] | None = None
    batch: int | None = Field(default=None, ge=1, le=MAX_READINGS_PER_MESSAGE)
    sensors: list[SensorConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> DeviceConfig:
        if self.count > 1 and "{i" not in self.name:
            raise ValueError(
                f"count = {self.count} needs a name with {{i}} in it, e.g. '{self.name}-{{i:03d}}'"
            )
        for name in (self.device_name(1), self.device_name(self.count)):
            if not is_device(name):
                raise ValueError(describe_bad_name("device", name))
        dup = _repeated(s.name for s in self.sensors)
        if dup:
            raise ValueError(f"sensor {', '.join(dup)} appears twice")
        return self

    def device_name(self, i: int) -> str:
        if self.count == 1 and "{i" not in self.name:
            return self.name
        try:
            return self.name.format(i=i)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"device name {self.name!r}: bad {{i}} template ({exc})") from None


class LabConfig(_Strict):
    name: Annotated[str, _named("lab", is_lab)]
    description: str = ""
    faults: Faults | None = None
    devices: list[DeviceConfig] = Field(min_length=1)


class ScenarioMeta(_Strict):
    name: str = ""
    description: str = ""
    seed: int = DEFAULT_SEED


class ScenarioFile(_Strict):
    scenario: ScenarioMeta = ScenarioMeta()
    defaults: DeviceDefaults = DeviceDefaults()
    faults: Faults = Faults()
    labs: list[LabConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ScenarioFile:
        dup = _repeated(lab.name for lab in self.labs)
        if dup:
            raise ValueError(f"lab {', '.join(dup)} appears twice")
        total = sum(d.count for lab in self.labs for d in lab.devices)
        if total > MAX_DEVICES:
            raise ValueError(f"{total} devices in all; at most {MAX_DEVICES} per scenario")
        return self


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: labs of devices (`LabSpec`), the seed and where it came from."""

    name: str
    description: str
    seed: int
    labs: tuple[LabSpec, ...]
    source: str


def _build(config: ScenarioFile, source: str) -> Scenario:
    labs = []
    for lab in config.labs:
        devices: list[Device] = []
        for dev in lab.devices:
            sensors = tuple(s.build() for s in dev.sensors)
            own = dev.model_dump(include=set(DeviceDefaults.model_fields), exclude_none=True)
            settings = config.defaults.model_dump() | own
            devices += (
                Device(dev.device_name(i), dev.kind, dev.description, sensors, **settings)
                for i in range(1, dev.count + 1)
            )
        if dup := ", ".join(_repeated(x.name for x in devices)[:5]):
            raise ScenarioError(f"{source}: lab {lab.name!r}: device {dup} appears twice")
        faults = lab.faults or config.faults
        labs.append(LabSpec(lab.name, lab.description, tuple(devices), faults))
    meta = config.scenario
    name = meta.name or Path(source).stem
    return Scenario(name, meta.description, meta.seed, tuple(labs), source)


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """A scenario from parsed TOML; ScenarioError lists every problem with its place."""
    try:
        config = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        problems = "".join(f"\n  {problem}" for problem in describe_errors(exc))
        raise ScenarioError(f"{source}: invalid scenario:{problems}") from None
    return _build(config, source)


def builtin_scenarios() -> dict[str, Path]:
    """The scenarios shipped with livelab-sim, by name."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.toml"))}


def load_scenario(name_or_path: str | Path = DEFAULT_SCENARIO) -> Scenario:
    """A built-in scenario by name, or a TOML file by path."""
    path = Path(name_or_path)
    builtin = builtin_scenarios()
    if str(name_or_path) in builtin and not path.exists():
        path = builtin[str(name_or_path)]
    elif not path.exists():
        known = ", ".join(builtin) or "none"
        raise ScenarioError(f"{name_or_path}: no such file, nor a built-in scenario ({known})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    return parse_scenario(data, str(path))
