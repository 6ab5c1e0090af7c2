"""`--record FILE.csv`: every reading a run sent that should be stored (``lab,device,sensor,
time,value``, time RFC 3339 UTC with milliseconds: the ``ts`` sent, clock skew included; for
form 1 the sample time, just before ingest's receive time). No copies, no malformed ones."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable
from pathlib import Path

from schemas.telemetry import format_ts
from simulators.models import Reading

HEADER = ("lab", "device", "sensor", "time", "value")


class CsvRecorder(contextlib.closing["CsvRecorder"]):
    """Writes readings to a CSV file (created or truncated on open); a context manager."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(self)
        self._file = Path(path).open("w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close)
        self._writer = csv.writer(self._file)
        self._writer.writerow(HEADER)

    def write(self, readings: Iterable[Reading]) -> None:
        self._writer.writerows(
            (r.lab, r.device, r.sensor, format_ts(r.time), r.value) for r in readings
        )

    def close(self) -> None:
        self._file.close()
