"""The demo lab: Oceanhamnen, Helsingborg's new harbour district (the H22 expo site).

A lab spec is a catalogue of devices and their sensor models. Any lab name can run it (tests
run it under their own unique lab), so the catalogue is separate from the MQTT lab name.
Scenario files will later build `LabSpec` objects the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from simulators.models import (
    NO2,
    PM25,
    Battery,
    EnergyCounter,
    Humidity,
    Occupancy,
    SeaLevel,
    SensorModel,
    SoundLevel,
    Temperature,
)


@dataclass(frozen=True)
class Device:
    """A device of the lab and the sensors it reports in each message."""

    name: str
    kind: str
    description: str
    sensors: tuple[SensorModel, ...]

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensors)


@dataclass(frozen=True)
class LabSpec:
    """A simulated lab: its devices, in publishing order."""

    name: str
    description: str
    devices: tuple[Device, ...]

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
        if devices is not None:
            unknown = [d for d in devices if d not in self.device_names]
            if unknown:
                raise ValueError(
                    f"unknown device(s) {', '.join(unknown)} in lab {self.name!r}; "
                    f"known: {', '.join(self.device_names)}"
                )
            wanted = set(devices)
            chosen = [d for d in chosen if d.name in wanted]
        if sensors is not None:
            known = {s for d in self.devices for s in d.sensor_names}
            unknown = [s for s in sensors if s not in known]
            if unknown:
                raise ValueError(
                    f"unknown sensor(s) {', '.join(unknown)} in lab {self.name!r}; "
                    f"known: {', '.join(sorted(known))}"
                )
            wanted = set(sensors)
            chosen = [
                replace(d, sensors=tuple(s for s in d.sensors if s.name in wanted)) for d in chosen
            ]
            chosen = [d for d in chosen if d.sensors]
        if not chosen:
            raise ValueError("the selection leaves no device with a sensor")
        return replace(self, devices=tuple(chosen))


def _air_quality(name: str, where: str, battery: bool = False) -> Device:
    sensors: tuple[SensorModel, ...] = (
        NO2("no2"),
        PM25("pm25"),
        Temperature("temperature"),
        Humidity("humidity"),
    )
    if battery:
        sensors += (Battery(),)
    return Device(name, "air-quality", f"air-quality station, {where}", sensors)


def _noise(name: str, where: str) -> Device:
    return Device(name, "noise", f"noise meter, {where}", (SoundLevel("laeq"), Battery()))


OCEANHAMNEN = LabSpec(
    name="oceanhamnen",
    description="Oceanhamnen, Helsingborg: the H22 expo district by the harbour",
    devices=(
        _air_quality("aq-01", "Oceanhamnen bus stop on Hamnbanan"),
        _air_quality("aq-02", "Oceanpiren promenade"),
        _air_quality("aq-03", "H22 expo square, solar powered", battery=True),
        _noise("noise-01", "ferry terminal"),
        _noise("noise-02", "residential courtyard"),
        _noise("noise-03", "Oceangatan"),
        Device(
            "sea-01",
            "sea-level",
            "sea-level gauge at the pier, cm above mean sea level",
            (SeaLevel("level"), Battery(cycle_days=30.0)),
        ),
        Device(
            "energy-01",
            "energy",
            "district energy meter, imported kWh (a counter)",
            (EnergyCounter("import_kwh"),),
        ),
        Device(
            "parking-01",
            "parking",
            "parking garage entrance counter, occupied places of 48",
            (Occupancy("occupied"), Battery(cycle_days=40.0)),
        ),
    ),
)


def lab_spec(lab: str) -> LabSpec:
    """The device catalogue that lab `lab` runs: for now every lab runs Oceanhamnen."""
    return OCEANHAMNEN
