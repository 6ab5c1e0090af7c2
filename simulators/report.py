"""The delivery audit's report: a row per series, the rejections per lab, the verdict; as a
table (`AuditReport.format_table`) and as JSON (``model_dump(mode="json")``)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from schemas.times import format_rfc3339

Status = Literal["ok", "missing", "doubled", "unexpected"]
SUMMARY_ROWS = 50  # more series than this: ok rows are summed up per lab and device


class SeriesRow(BaseModel):
    """One series: what the manifest expects and what the API holds in the range."""

    lab: str
    device: str
    sensor: str
    expected: int
    stored: int
    status: Status

    @computed_field  # type: ignore[prop-decorator]
    @property
    def diff(self) -> int:
        return self.stored - self.expected

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def status_text(self) -> str:
        """'ok', 'missing 3', 'doubled 2', 'unexpected 5'."""
        return "ok" if self.ok else f"{self.status} {abs(self.diff)}"

    def cells(self) -> list[str]:
        diff = f"{self.diff:+d}" if self.diff else "0"
        expected, stored = str(self.expected), str(self.stored)
        return [self.lab, self.device, self.sensor, expected, stored, diff, self.status_text()]


class Rejections(BaseModel):
    expected: int
    found: int | None  # None: not checked (the lab is a 404)


class LabAudit(BaseModel):
    """The audit of one lab: a row per series, the rejections, the range asked for."""

    lab: str
    start: datetime | None
    end: datetime | None
    open_end: bool
    error: str | None = None
    rejections: Rejections
    series: list[SeriesRow]


class AuditReport(BaseModel):
    """The outcome: per-lab, per-series rows, rejections, totals, problems and notes."""

    mode: str
    scenario: str
    seed: int | None
    started_at: datetime | None
    complete: bool
    api_url: str
    strict_rejections: bool = False
    waited_seconds: float = 0.0  # the audit's time, waiting for ingest included
    problems: list[str] = Field(default_factory=list)  # each one fails the audit
    notes: list[str] = Field(default_factory=list)  # worth knowing, not a failure
    labs: list[LabAudit] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rows(self) -> list[SeriesRow]:
        return [row for lab in self.labs for row in lab.series]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def totals(self) -> dict[str, int]:
        rows = self.rows
        bad = ("missing", "doubled", "unexpected")
        return {
            "series": len(rows),
            "expected": sum(r.expected for r in rows),
            "stored": sum(r.stored for r in rows),
            **{status: sum(abs(r.diff) for r in rows if r.status == status) for status in bad},
            "problem_series": sum(1 for r in rows if not r.ok),
            "rejections_expected": sum(lab.rejections.expected for lab in self.labs),
            "rejections_found": sum(lab.rejections.found or 0 for lab in self.labs),
        }

    def rejection_status(self, lab: LabAudit) -> str:
        found, want = lab.rejections.found, lab.rejections.expected
        if found is None:
            return "not checked"
        if found == want:
            return "ok"
        if found < want:
            return f"missing {want - found}"
        strict = " (strict: failure)" if self.strict_rejections else " (see notes)"
        return f"more {found - want}{strict}"

    def format_table(self, max_rows: int = SUMMARY_ROWS) -> str:
        """Header, series table, rejections, totals, notes, problems and the verdict. With more
        than `max_rows` series, ok series are summed up per lab and device."""
        what = f"{self.mode} run" + (f" of {self.scenario!r}" if self.scenario else "")
        if self.seed is not None:
            what += f", seed {self.seed}"
        if self.started_at is not None:
            what += f", started {format_rfc3339(self.started_at)}"
        state = "complete" if self.complete else "INCOMPLETE"
        out = [f"delivery audit of the {what} ({state})"]
        for lab in self.labs:
            if lab.start is not None and lab.end is not None:
                end = format_rfc3339(lab.end) + (" (open end: now)" if lab.open_end else "")
                out.append(f"  {lab.lab}: readings in [{format_rfc3339(lab.start)}, {end})")
        out.append("")
        rows = self.rows
        summarise = len(rows) > max_rows
        table = [["LAB", "DEVICE", "SENSOR", "EXPECTED", "STORED", "DIFF", "STATUS"]]
        for lab in self.labs:
            table.extend(_per_device(lab.series) if summarise else [r.cells() for r in lab.series])
        out.extend(
            _align(table, right={3, 4, 5}) if len(table) > 1 else ["(no series expected or stored)"]
        )
        if summarise:
            devices = len({(r.lab, r.device) for r in rows})
            out.append(
                f"({len(rows)} series of {devices} devices: ok series summed up per device, "
                "every other series listed; the JSON report has every row)"
            )
        out.append("")
        rej = [["LAB", "REJECTIONS EXPECTED", "FOUND", "STATUS"]]
        for lab in self.labs:
            found = "-" if lab.rejections.found is None else str(lab.rejections.found)
            rej.append([lab.lab, str(lab.rejections.expected), found, self.rejection_status(lab)])
        out.extend([*_align(rej, right={1, 2}), ""])
        t = self.totals
        out.append(
            f"total: {t['expected']} readings expected, {t['stored']} stored in {t['series']} "
            f"series ({t['missing']} missing, {t['doubled']} doubled, {t['unexpected']} "
            f"unexpected); rejections: {t['rejections_expected']} expected, "
            f"{t['rejections_found']} found"
        )
        for title, items in (("notes", self.notes), ("problems", self.problems)):
            if items:
                out.extend([f"{title}:", *(f"  - {item}" for item in items)])
        out.append("audit: OK" if self.ok else f"audit: FAILED ({len(self.problems)} problem(s))")
        return "\n".join(out) + "\n"


def _per_device(rows: list[SeriesRow]) -> list[list[str]]:
    """Per device: one line for its ok series, then its other series one by one."""
    out: list[list[str]] = []
    for device, rows_of_device in itertools.groupby(rows, key=lambda r: r.device):
        group = list(rows_of_device)
        if good := [r for r in group if r.ok]:
            n = str(sum(r.expected for r in good))
            out.append([good[0].lab, device, f"({len(good)} series)", n, n, "0", "ok"])
        out.extend(r.cells() for r in group if not r.ok)
    return out


def _align(table: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(map(len, column)) for column in zip(*table, strict=True)]
    pads = [str.rjust if i in right else str.ljust for i in range(len(widths))]
    cells = ((pad(c, w) for pad, c, w in zip(pads, row, widths, strict=True)) for row in table)
    return ["  ".join(row).rstrip() for row in cells]
