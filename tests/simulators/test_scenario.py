"""Scenario files: the built-ins load, and invalid files fail with the place and the problem."""

from __future__ import annotations

import subprocess
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from simulators.models import Battery, SeaLevel
from simulators.scenario import (
    ScenarioError,
    builtin_scenarios,
    load_scenario,
    parse_scenario,
)
from tests.helpers import run_sim

MINIMAL = """
[[labs]]
name = "pilot"
[[labs.devices]]
name = "t-01"
sensors = [{ name = "temperature", model = "temperature" }]
"""


def test_builtin_scenarios_load_with_realistic_models() -> None:
    assert {"oceanhamnen", "rehearsal"} <= set(builtin_scenarios())
    demo = load_scenario("oceanhamnen")
    assert demo.seed == 22 and [lab.name for lab in demo.labs] == ["oceanhamnen"]
    lab = demo.labs[0]
    models = {type(s).__name__ for d in lab.devices for s in d.sensors}
    assert models == {
        "NO2", "PM25", "Temperature", "Humidity", "SoundLevel", "SeaLevel", "EnergyCounter",
        "Occupancy", "Battery",
    }  # fmt: skip
    noise = [d for d in lab.devices if d.name.startswith("noise-")]
    assert [d.name for d in noise] == ["noise-01", "noise-02", "noise-03"]
    assert all(d.form == "senml" for d in noise)
    sea = next(d for d in lab.devices if d.name == "sea-01")
    assert (sea.interval, sea.form, sea.batch) == (timedelta(minutes=5), 3, 3)
    assert isinstance(sea.sensors[0], SeaLevel) and sea.sensors[0].tide_cm == 9.0
    assert not any(lab.faults.rates().values())
    rehearsal = load_scenario("rehearsal").labs[0]
    assert all(rehearsal.faults.rates().values()) and rehearsal.faults.duplicate > 0
    assert rehearsal.device_names == lab.device_names


def test_defaults_count_and_model_parameters(tmp_path: Path) -> None:
    path = tmp_path / "city.toml"
    path.write_text(
        """
[scenario]
name = "city"
seed = 7
[defaults]
interval = 30
form = "senml"
qos = 0
[faults]
duplicate = 0.5
[[labs]]
name = "north"
[[labs.devices]]
name = "b-{i:04d}"
count = 1500
sensors = [{ name = "battery_v", model = "battery", cycle_days = 3, decimals = 3 }]
[[labs]]
name = "south"
faults = { drop = 0.25 }
[[labs.devices]]
name = "gauge"
interval = "1h30m"
form = 3
sensors = [{ name = "level", model = "sea_level", tide_cm = 20 }]
"""
    )
    scenario = load_scenario(path)
    devices = [d for lab in scenario.labs for d in lab.devices]
    series = sum(len(d.sensors) for d in devices)
    assert (scenario.name, scenario.seed, len(devices), series) == (
        "city",
        7,
        1501,
        1501,
    )
    north, south = scenario.labs
    assert north.devices[0].name == "b-0001" and north.devices[-1].name == "b-1500"
    first = north.devices[0]
    assert (first.interval, first.form, first.qos) == (timedelta(seconds=30), "senml", 0)
    battery = first.sensors[0]
    assert isinstance(battery, Battery) and (battery.cycle_days, battery.decimals) == (3, 3)
    assert north.faults.duplicate == 0.5
    assert (south.faults.drop, south.faults.duplicate) == (0.25, 0.0)  # the lab's own table
    assert (south.devices[0].interval, south.devices[0].form) == (timedelta(minutes=90), 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('[scenario]\nnmae = "x"\n', "scenario.nmae: unknown key"),
        ("[defaults]\nform = 4\n", "defaults.form: Input should be 1, 2, 3 or 'senml', not 4"),
        ('[defaults]\ninterval = "soon"\n', "defaults.interval: 'soon' is not a duration"),
        ("[defaults]\ninterval = 0\n", "defaults.interval: 0: the duration must be positive"),
        ("[faults]\ndrop = 1.5\n", "faults.drop: Input should be less than or equal to 1"),
        ('[faults]\nclock_skew_max = "10m"\n', "5-minute future limit"),
        ('[faults]\nmalformed_kinds = ["xml"]\n', "faults.malformed_kinds[0]"),
        ("[faults]\nburst_size = 0\n", "faults.burst_size: Input should be greater than"),
    ],
)
def test_invalid_settings_name_the_place(change: str, message: str) -> None:
    data = tomllib.loads(change + MINIMAL)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "pilot.toml")
    assert str(err.value).startswith("pilot.toml: invalid scenario:")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ('name = "T 01"\nsensors = [{ name = "t", model = "temperature" }]', "device name 'T 01'"),
        ('name = "t"\nsensors = [{ name = "t", model = "thermo" }]', "unknown model 'thermo'"),
        (
            'name = "t"\nsensors = [{ name = "t", model = "sea_level", tide = 3 }]',
            "model 'sea_level' has no parameter 'tide'; its parameters: decimals, tide_cm, unit",
        ),
        (
            'name = "t"\nsensors = [{ name = "t", model = "battery", cycle_days = "weekly" }]',
            "cycle_days: Input should be a valid number, not 'weekly'",
        ),
        ('name = "t"\nsensors = []', "labs[0].devices[0].sensors: List should have at least 1"),
        (
            'name = "t"\ncount = 3\nsensors = [{ name = "t", model = "temperature" }]',
            "needs a name with {i}",
        ),
        (
            'name = "t"\nsensors = [{ name = "t", model = "no2" }, { name = "t", model = "pm25" }]',
            "sensor t appears twice",
        ),
        (
            'name = "t"\nsensors = [{ name = "-t", model = "no2" }]',
            "sensors[0].name: sensor name '-t'",
        ),
        ('name = "t"\nform = 3\nbatch = 0\nsensors = [{ name = "t", model = "no2" }]', "batch"),
    ],
)
def test_invalid_devices_name_the_place(device: str, message: str) -> None:
    data = tomllib.loads(f'[[labs]]\nname = "pilot"\n[[labs.devices]]\n{device}\n')
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "pilot.toml")
    assert message in str(err.value), str(err.value)
    assert "labs[0].devices[0]" in str(err.value)


def test_every_problem_is_listed_and_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="labs: Field required"):
        parse_scenario({}, "empty.toml")
    data = tomllib.loads(MINIMAL + MINIMAL.replace("[[labs]]\n", "", 0))
    with pytest.raises(ScenarioError, match="lab pilot appears twice"):
        parse_scenario(data)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[labs]\nname = 'x'\n")
    with pytest.raises(ScenarioError, match=r"broken.toml: not valid TOML"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="no such file, nor a built-in scenario"):
        load_scenario(tmp_path / "missing.toml")
    both = tomllib.loads("[defaults]\nqos = 2\n[faults]\nlate = -1\n" + MINIMAL)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(both)
    assert "defaults.qos" in str(err.value) and "faults.late" in str(err.value)


def test_check_command(tmp_path: Path) -> None:
    def check(target: str) -> subprocess.CompletedProcess[str]:
        return run_sim("check", target)

    ok = check("rehearsal")
    assert ok.returncode == 0, ok.stderr
    assert "lab rehearsal: 9 devices, 24 series" in ok.stdout
    assert "duplicate 0.02" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace('"temperature" }', '"temperature", decimal = 2 }'))
    failed = check(str(bad))
    assert failed.returncode == 2
    assert "model 'temperature' has no parameter 'decimal'" in failed.stderr
    assert str(bad) in failed.stderr
