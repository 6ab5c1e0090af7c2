"""`--record FILE.csv`: every reading a run sent that should be stored, so a test can compute
expected results (and `livelab-sim replay` can send them again).

Columns: ``lab,device,sensor,time,value``; `time` is RFC 3339 UTC with milliseconds. For
form 2, 3 and SenML messages it is the reading's own timestamp (the ``ts`` sent, clock skew
included). For form 1 (live mode only) the message carries no time and ingest stores its
receive time: the file then holds the sample time, which precedes the stored time by the
transit delay. Duplicate copies and malformed messages are not written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from schemas.telemetry import format_ts
from simulators.models import Reading

HEADER = ("lab", "device", "sensor", "time", "value")


class CsvRecorder:
    """Appends readings to a CSV file (created or truncated on open)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: io.TextIOWrapper = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(HEADER)
        self.rows = 0

    def write(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self._writer.writerow((r.lab, r.device, r.sensor, format_ts(r.time), r.value))
            self.rows += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_records(path: str | Path) -> list[dict[str, str]]:
    """The rows of a recorded file as dicts (values stay strings)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
