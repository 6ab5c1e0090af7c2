"""Simulated live labs that publish telemetry to MQTT (`livelab-sim`).

Modules, one idea each:

- `models`: sensor models - a reading is a pure function of (seed, device, sensor, time).
- `demo`: the Oceanhamnen lab's devices (`LabSpec`, `Device`).
- `generator`: `generate(...)`, the readings of a lab over a time range.
- `messages`: readings packed into telemetry messages (forms 1, 2, 3).
- `publisher`: `Publisher`, paho-mqtt with flow control, waiting for every acknowledgement.
- `record`: the CSV of every reading published (``--record``).
- `runner`: `backfill(...)` and `live(...)`, what the CLI runs.
- `errors`: `BrokerUnreachable`, `PublishIncomplete`.
"""

from simulators.demo import OCEANHAMNEN, Device, LabSpec, lab_spec
from simulators.errors import BrokerUnreachable, PublishIncomplete, SimulatorError
from simulators.generator import DEFAULT_SEED, generate, time_grid
from simulators.messages import Message, pack
from simulators.models import Reading
from simulators.publisher import Publisher
from simulators.record import CsvRecorder, read_records
from simulators.runner import Summary, backfill, live

__all__ = [
    "DEFAULT_SEED",
    "OCEANHAMNEN",
    "BrokerUnreachable",
    "CsvRecorder",
    "Device",
    "LabSpec",
    "Message",
    "PublishIncomplete",
    "Publisher",
    "Reading",
    "SimulatorError",
    "Summary",
    "backfill",
    "generate",
    "lab_spec",
    "live",
    "pack",
    "read_records",
    "time_grid",
]
