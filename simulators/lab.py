"""A simulated lab: `LabSpec`, its `Device`s, their sensor models and publishing settings, as
scenario files build them; a lab spec can run under any lab name (`LabSpec.renamed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal, TypeAlias

from simulators.faults import Faults
from simulators.models import SensorModel

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
        """The same lab with only the given devices and sensors (None: all).

        Raises ValueError naming what is unknown; a device left with no sensor is dropped.
        """
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
