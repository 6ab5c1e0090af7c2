"""Simulated live labs that publish telemetry to MQTT (`livelab-sim`).

Modules, one idea each: `models` (sensor models: a reading is a pure function of seed,
device, sensor and time), `lab` (`LabSpec`, `Device`), `scenario` (TOML files; built-ins in
``scenarios/``), `faults`, `stream` (the messages of labs in time order, faults injected),
`messages` (payloads of forms 1, 2, 3 and SenML), `publisher` (paho-mqtt with flow control),
`options` (`RunOptions`, `SimSettings`), `runner` (`backfill`, `live`, `replay`), `replay`
(CSV files), `loadgen` (the load generator), `manifest` (what a run sent), `audit` /
`report` / `apiclient` (was it stored exactly once?), `record`, `progress`, `errors`.
"""

from simulators.errors import BrokerUnreachable, PublishIncomplete, SimulatorError
from simulators.faults import Faults
from simulators.lab import Device, LabSpec
from simulators.manifest import Manifest
from simulators.models import DEFAULT_SEED, Reading
from simulators.options import RunOptions
from simulators.publisher import Publisher
from simulators.runner import Summary, backfill, live, replay
from simulators.scenario import Scenario, ScenarioError, load_scenario
from simulators.stream import Stream

__all__ = [
    "DEFAULT_SEED",
    "BrokerUnreachable",
    "Device",
    "Faults",
    "LabSpec",
    "Manifest",
    "PublishIncomplete",
    "Publisher",
    "Reading",
    "RunOptions",
    "Scenario",
    "ScenarioError",
    "SimulatorError",
    "Stream",
    "Summary",
    "backfill",
    "live",
    "load_scenario",
    "replay",
]
