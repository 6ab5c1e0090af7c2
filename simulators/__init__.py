"""Simulated live labs that publish telemetry to MQTT (`livelab-sim`).

Modules, one idea each:

- `models`: sensor models - a reading is a pure function of (seed, device, sensor, time).
- `lab`: `LabSpec` and `Device`: a lab's devices, sensors and publishing settings.
- `scenario`: scenario files (TOML) -> `Scenario`; built-ins in ``scenarios/``.
- `demo`: the Oceanhamnen lab (the built-in ``oceanhamnen`` scenario).
- `faults`: fault rates (`Faults`) and malformed payloads.
- `stream`: `Stream`, the messages of a lab in time order, faults injected and accounted.
- `replay`: `ReplayStream`, the same from a CSV file of readings.
- `generator`: `generate(...)`, the readings of a lab over a time range (no faults).
- `messages`: a device's readings as payloads (forms 1, 2, 3 and SenML).
- `publisher`: `Publisher`, paho-mqtt with flow control, waiting for every acknowledgement.
- `manifest`: `Manifest`, what a run sent; `audit` compares it with what the API holds.
- `loadgen`: the multi-process load generator.
- `record`: the CSV of every reading that should be stored (``--record``).
- `runner`: `backfill(...)`, `live(...)` and `replay(...)`, what the CLI runs.
- `errors`: `BrokerUnreachable`, `PublishIncomplete`, `AuditError`.
"""

from simulators.demo import OCEANHAMNEN, Device, LabSpec, lab_spec
from simulators.errors import BrokerUnreachable, PublishIncomplete, SimulatorError
from simulators.faults import Faults
from simulators.generator import DEFAULT_SEED, generate, time_grid
from simulators.manifest import Manifest
from simulators.models import Reading
from simulators.publisher import Publisher
from simulators.record import CsvRecorder, read_records
from simulators.runner import Summary, backfill, live, replay
from simulators.scenario import Scenario, ScenarioError, load_scenario
from simulators.stream import Stream

__all__ = [
    "DEFAULT_SEED",
    "OCEANHAMNEN",
    "BrokerUnreachable",
    "CsvRecorder",
    "Device",
    "Faults",
    "LabSpec",
    "Manifest",
    "PublishIncomplete",
    "Publisher",
    "Reading",
    "Scenario",
    "ScenarioError",
    "SimulatorError",
    "Stream",
    "Summary",
    "backfill",
    "generate",
    "lab_spec",
    "live",
    "load_scenario",
    "read_records",
    "replay",
    "time_grid",
]
