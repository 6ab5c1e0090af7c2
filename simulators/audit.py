"""The delivery audit: did every reading a simulator run sent end up stored, exactly once?

``livelab-sim audit --manifest run.json`` (or ``--verify`` on a run) reads the run's
manifest (`simulators.manifest`) and asks the HTTP API, per lab of the manifest:

- readings: ``GET /v1/labs/{lab}/aggregates?start=..&end=..&bucket=1mo&tz=UTC&stats=count``
  over the manifest's half-open range [start, end), summed per series (device, sensor). Month
  buckets keep the answer small for any range (a month counts as 30 days against the API's
  bucket limit: ~8 000 years at the default). Should the server still refuse the range as
  too large (its bucket or row limits, ``LIVELAB_API_MAX_BUCKETS`` / ``LIVELAB_API_MAX_ROWS``),
  the audit splits it in halves, down to about a month, and adds the halves up: [start, mid)
  and [mid, end) count every reading exactly once.
  With ``open_end`` (form 1 readings, stamped by ingest on receipt) the range ends at the
  moment of each poll (+1 s) and starts at the lab's `start`, else at the run's `started_at`.
- rejections: ``GET /v1/labs/{lab}/rejections`` paged newest first, counting the rows whose
  `received_at` is at or after the run's `started_at` (paging stops at the first older one).
  The endpoint has no time filter, so this is the only way to count "since the run began".

Each series gets a row: expected (the manifest), stored (the API), diff = stored - expected,
and a status: ``ok``; ``missing`` (stored < expected); ``doubled`` (stored > expected: a
reading stored twice, or a reading the run did not account for); ``unexpected`` (a series
stored in the range that the manifest does not name: extra readings). Anything but ``ok``
fails the audit. A lab the API answers 404 for (outside the key's scope, or unknown to an
all-labs key because it holds nothing) fails too.

Rejections: fewer than the manifest's count fails (a lost rejection is a silent drop). More is
reported, not failed: the ingest worker records a rejection once per delivery, so a message
redelivered after a worker crash (QoS 1, acknowledged only after the commit) is recorded
twice, and any other rejection of the lab since the run started (another device, another
run) is counted too. ``strict_rejections`` (``--strict-rejections``) makes more a failure.

Ingest may lag behind the run: the audit polls until every count matches, or until no count
changed for `wait` seconds, and then reports what is there. Progress goes to the
``simulators.audit`` logger ("waiting for ingest: 812 of 1000 readings stored").

A manifest with ``complete: false`` (the run was stopped early, or not every QoS 1 message
was acknowledged) is audited all the same and the report says so. The manifest counts the
messages handed to the MQTT client, so a message the broker never got shows up as missing,
and missing readings fail the audit either way.

The table (`AuditReport.format_table`) lists every series; with more than `SUMMARY_ROWS`
(50) series it lists every series that is not ok and sums up the ok ones in one line per lab
and device ("12 series ok"), so a run with hundreds of series stays readable. ``--json FILE``
writes the full report with every row.

Exit status of `run_audit` (``livelab-sim audit`` / ``--verify``):

- 0: every reading stored exactly once and no rejection missing;
- 1: readings missing, doubled or unexpected, a lab not visible to the key, rejections
  missing (or, with ``--strict-rejections``, more rejections than injected);
- 2: usage error: no API key (``--api-key`` or ``LIVELAB_API_KEY``), ``--json`` not writable;
- 3: the API could not be asked: unreachable, timed out, refused the key (401), answered 5xx
  or something that is not the livelab API (`AuditError`; ``livelab-sim: error: ...``).

Clocks: the rejection cut-off compares the run's clock (`started_at`) with the worker's
(`received_at`), and an open-ended range ends at the auditor's clock: on one host (or hosts
with NTP) that is exact enough; skewed clocks shift what is counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import httpx

from schemas.times import format_rfc3339, parse_rfc3339
from simulators.cliargs import non_negative_float
from simulators.errors import AuditError
from simulators.manifest import LabManifest, Manifest, write_json

log = logging.getLogger(__name__)

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_WAIT = 30.0
SUMMARY_ROWS = 50  # more series than this: ok rows are summed up per lab and device
REJECTION_PAGE = 1000  # the API's largest page
_MIN_SPLIT = timedelta(days=62)  # never split a refused range shorter than this
_OPEN_END_SLACK = timedelta(seconds=1)
_LOG_EVERY = 5.0  # seconds between progress lines while nothing changes

Status = Literal["ok", "missing", "doubled", "unexpected"]
SeriesKey = tuple[str, str]  # (device, sensor)

REDELIVERY_NOTE = (
    "not a failure: the ingest worker records a rejection once per delivery, so a message "
    "redelivered after a worker crash is recorded twice (and any other rejection of the lab "
    "since the run started is counted too); --strict-rejections makes this a failure"
)


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class SeriesRow:
    """One series: what the manifest expects and what the API holds in the range."""

    lab: str
    device: str
    sensor: str
    expected: int
    stored: int
    status: Status

    @property
    def diff(self) -> int:
        return self.stored - self.expected

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def status_text(self) -> str:
        """'ok', 'missing 3', 'doubled 2', 'unexpected 5'."""
        return "ok" if self.ok else f"{self.status} {abs(self.diff)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "device": self.device,
            "sensor": self.sensor,
            "expected": self.expected,
            "stored": self.stored,
            "diff": self.diff,
            "status": self.status,
        }


@dataclass
class Observed:
    """What the API answered for one lab at one poll."""

    start: datetime | None = None  # the range asked for; None: readings not checked
    end: datetime | None = None
    stored: Counter[SeriesKey] | None = None  # None: not asked (no range) or 404
    rejections: int | None = None  # None: 404
    error: str | None = None  # the lab could not be audited (404)

    def key(self) -> tuple[Any, ...]:
        """What a change of is progress (the range's end moves with open_end: left out)."""
        stored = None if self.stored is None else sorted(self.stored.items())
        return (stored, self.rejections, self.error)


@dataclass
class LabAudit:
    """The audit of one lab: a row per series, the rejections, the range asked for."""

    lab: str
    start: datetime | None
    end: datetime | None
    open_end: bool
    rows: list[SeriesRow]
    rejections_expected: int
    rejections_found: int | None
    error: str | None = None

    @property
    def expected(self) -> int:
        return sum(r.expected for r in self.rows)

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "start": None if self.start is None else format_rfc3339(self.start),
            "end": None if self.end is None else format_rfc3339(self.end),
            "open_end": self.open_end,
            "error": self.error,
            "readings": {"expected": self.expected, "stored": self.stored},
            "rejections": {"expected": self.rejections_expected, "found": self.rejections_found},
            "series": [r.to_json() for r in self.rows],
        }


@dataclass
class AuditReport:
    """The outcome: per-lab, per-series rows, rejections, totals, problems and notes."""

    mode: str
    scenario: str
    seed: int | None
    started_at: datetime | None
    complete: bool
    api_url: str
    labs: list[LabAudit]
    strict_rejections: bool = False
    problems: list[str] = field(default_factory=list)  # each one fails the audit
    notes: list[str] = field(default_factory=list)  # worth knowing, not a failure
    waited: float = 0.0  # seconds the audit took, waiting for ingest included

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rows(self) -> list[SeriesRow]:
        return [row for lab in self.labs for row in lab.rows]

    @property
    def totals(self) -> dict[str, int]:
        rows = self.rows
        return {
            "series": len(rows),
            "expected": sum(r.expected for r in rows),
            "stored": sum(r.stored for r in rows),
            "missing": sum(-r.diff for r in rows if r.status == "missing"),
            "doubled": sum(r.diff for r in rows if r.status == "doubled"),
            "unexpected": sum(r.diff for r in rows if r.status == "unexpected"),
            "problem_series": sum(1 for r in rows if not r.ok),
            "rejections_expected": sum(lab.rejections_expected for lab in self.labs),
            "rejections_found": sum(lab.rejections_found or 0 for lab in self.labs),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "scenario": self.scenario,
            "seed": self.seed,
            "started_at": None if self.started_at is None else format_rfc3339(self.started_at),
            "complete": self.complete,
            "api_url": self.api_url,
            "strict_rejections": self.strict_rejections,
            "waited_seconds": round(self.waited, 3),
            "totals": self.totals,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "labs": [lab.to_json() for lab in self.labs],
        }

    def format_table(self, max_rows: int = SUMMARY_ROWS) -> str:
        """A plain-text report: header, series table, rejections, totals, notes, verdict.

        With more than `max_rows` series, ok series are summed up per lab and device and
        every other series keeps its own line.
        """
        out: list[str] = []
        what = f"{self.mode} run" + (f" of {self.scenario!r}" if self.scenario else "")
        if self.seed is not None:
            what += f", seed {self.seed}"
        if self.started_at is not None:
            what += f", started {format_rfc3339(self.started_at)}"
        out.append(
            f"delivery audit of the {what} ({'complete' if self.complete else 'INCOMPLETE'})"
        )
        for lab in self.labs:
            if lab.start is not None and lab.end is not None:
                end = format_rfc3339(lab.end) + (" (open end: now)" if lab.open_end else "")
                out.append(f"  {lab.lab}: readings in [{format_rfc3339(lab.start)}, {end})")
        out.append("")

        rows = self.rows
        summarise = len(rows) > max_rows
        table: list[list[str]] = [
            ["LAB", "DEVICE", "SENSOR", "EXPECTED", "STORED", "DIFF", "STATUS"]
        ]
        for lab in self.labs:
            if summarise:
                table.extend(_summary_lines(lab.rows))
            else:
                table.extend(_cells(r) for r in lab.rows)
        if len(table) > 1:
            out.extend(_align(table, right={3, 4, 5}))
        else:
            out.append("(no series expected or stored)")
        if summarise:
            devices = len({(r.lab, r.device) for r in rows})
            out.append(
                f"({len(rows)} series of {devices} devices: ok series summed up per device, "
                "every other series listed; the JSON report has every row)"
            )
        out.append("")

        rej: list[list[str]] = [["LAB", "REJECTIONS EXPECTED", "FOUND", "STATUS"]]
        for lab in self.labs:
            found = "-" if lab.rejections_found is None else str(lab.rejections_found)
            rej.append([lab.lab, str(lab.rejections_expected), found, self._rejection_status(lab)])
        out.extend(_align(rej, right={1, 2}))
        out.append("")

        t = self.totals
        out.append(
            f"total: {t['expected']} readings expected, {t['stored']} stored in {t['series']} "
            f"series ({t['missing']} missing, {t['doubled']} doubled, {t['unexpected']} "
            f"unexpected); rejections: {t['rejections_expected']} expected, "
            f"{t['rejections_found']} found"
        )
        if self.notes:
            out.append("notes:")
            out.extend(f"  - {note}" for note in self.notes)
        if self.problems:
            out.append("problems:")
            out.extend(f"  - {problem}" for problem in self.problems)
        out.append("audit: OK" if self.ok else f"audit: FAILED ({len(self.problems)} problem(s))")
        return "\n".join(out) + "\n"

    def _rejection_status(self, lab: LabAudit) -> str:
        if lab.rejections_found is None:
            return "not checked"
        diff = lab.rejections_found - lab.rejections_expected
        if diff == 0:
            return "ok"
        if diff < 0:
            return f"missing {-diff}"
        return f"more {diff}" + (" (strict: failure)" if self.strict_rejections else " (see notes)")


def _cells(row: SeriesRow) -> list[str]:
    return [
        row.lab,
        row.device,
        row.sensor,
        str(row.expected),
        str(row.stored),
        f"{row.diff:+d}" if row.diff else "0",
        row.status_text(),
    ]


def _summary_lines(rows: list[SeriesRow]) -> list[list[str]]:
    """Per device: one line for its ok series, then its other series one by one."""
    by_device: dict[str, list[SeriesRow]] = {}
    for row in rows:
        by_device.setdefault(row.device, []).append(row)
    out: list[list[str]] = []
    for device, group in by_device.items():
        good = [r for r in group if r.ok]
        if good:
            n = sum(r.expected for r in good)
            out.append([good[0].lab, device, f"({len(good)} series)", str(n), str(n), "0", "ok"])
        out.extend(_cells(r) for r in group if not r.ok)
    return out


def _align(table: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


# ---------------------------------------------------------------------------------------------
# Pure parts: summing, comparing, judging


def sum_counts(rows: Iterable[Mapping[str, Any]]) -> Counter[SeriesKey]:
    """Readings per (device, sensor) from aggregate rows with a `count` (one per bucket)."""
    counts: Counter[SeriesKey] = Counter()
    for row in rows:
        counts[(str(row["device"]), str(row["sensor"]))] += int(row["count"] or 0)
    return counts


def compare_series(
    lab: str, expected: Mapping[SeriesKey, int], stored: Mapping[SeriesKey, int]
) -> list[SeriesRow]:
    """A row per series of either side, in byte order of (device, sensor)."""
    rows = []
    for key in sorted(set(expected) | {k for k, n in stored.items() if n}):
        want, have = expected.get(key, 0), stored.get(key, 0)
        status: Status
        if key not in expected:
            status = "unexpected"
        elif have < want:
            status = "missing"
        elif have > want:
            status = "doubled"
        else:
            status = "ok"
        rows.append(SeriesRow(lab, key[0], key[1], want, have, status))
    return rows


def build_report(
    manifest: Manifest,
    observed: Mapping[str, Observed],
    *,
    api_url: str = "",
    strict_rejections: bool = False,
    waited: float = 0.0,
) -> AuditReport:
    """Compare what the API answered (`observed`, per lab) with the manifest."""
    report = AuditReport(
        mode=manifest.mode,
        scenario=manifest.scenario,
        seed=manifest.seed,
        started_at=manifest.started_at,
        complete=manifest.complete,
        api_url=api_url,
        labs=[],
        strict_rejections=strict_rejections,
        waited=waited,
    )
    if not manifest.complete:
        report.notes.append(
            "the run was incomplete (stopped early, or not every message was acknowledged): "
            "the manifest counts the messages handed to the MQTT client, so a message the "
            "broker never got shows up as missing; missing readings fail the audit all the same"
        )
    if not manifest.labs:
        report.notes.append("the manifest names no lab: nothing to audit")
    if manifest.started_at is None:
        report.notes.append(
            "the manifest has no started_at: every rejection the API lists for a lab is counted"
        )
    for name, spec in sorted(manifest.labs.items()):
        seen = observed.get(name, Observed())
        stored = seen.stored if seen.stored is not None else Counter()
        lab = LabAudit(
            lab=name,
            start=seen.start,
            end=seen.end,
            open_end=spec.open_end,
            rows=compare_series(name, spec.series, stored),
            rejections_expected=spec.rejections,
            rejections_found=seen.rejections,
            error=seen.error,
        )
        report.labs.append(lab)
        _judge_lab(report, lab, spec, seen)
    return report


def _judge_lab(report: AuditReport, lab: LabAudit, spec: LabManifest, seen: Observed) -> None:
    name = lab.lab
    if seen.error is not None:
        report.problems.append(f"{name}: {seen.error}")
        return
    if seen.stored is None and spec.readings:
        report.problems.append(f"{name}: readings were not checked (the manifest has no range)")
    elif seen.stored is None:
        report.notes.append(
            f"{name}: no readings expected and no time range in the manifest: stored readings "
            "not checked"
        )
    for status, template in (
        ("missing", "{n} reading(s) missing in {k} series"),
        ("doubled", "{n} reading(s) more than expected (doubled) in {k} series"),
        ("unexpected", "{n} unexpected reading(s) in {k} series the manifest does not name"),
    ):
        bad = [r for r in lab.rows if r.status == status]
        if bad:
            what = template.format(n=sum(abs(r.diff) for r in bad), k=len(bad))
            shown = ", ".join(f"{r.device}/{r.sensor} {r.diff:+d}" for r in bad[:5])
            more = f", and {len(bad) - 5} more" if len(bad) > 5 else ""
            report.problems.append(f"{name}: {what} ({shown}{more})")
    found, want = lab.rejections_found, lab.rejections_expected
    if found is None:
        return
    if found < want:
        report.problems.append(
            f"{name}: {want - found} rejection(s) missing ({found} of {want} found since the "
            "run started): a rejection lost is a message dropped in silence"
        )
    elif found > want:
        text = (
            f"{name}: {found - want} more rejection(s) than the run injected "
            f"({found} found, {want} expected)"
        )
        if report.strict_rejections:
            report.problems.append(text + " (--strict-rejections)")
        else:
            report.notes.append(f"{text}; {REDELIVERY_NOTE}")


def settled(manifest: Manifest, observed: Mapping[str, Observed]) -> bool:
    """Every count matches: waiting longer cannot make the audit better."""
    for name, spec in manifest.labs.items():
        seen = observed.get(name)
        if seen is None or seen.error is not None:
            return False
        if seen.stored is not None and +seen.stored != +spec.series:
            return False
        if seen.rejections is not None and seen.rejections < spec.rejections:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Asking the API


class _Api:
    """The few GETs the audit makes, with every failure turned into a clear `AuditError`."""

    def __init__(self, client: httpx.Client, base: str, timeout: float) -> None:
        self.client = client
        self.base = base
        self.timeout = timeout

    def get(
        self, path: str, params: dict[str, Any] | None = None, accept: tuple[int, ...] = ()
    ) -> httpx.Response:
        """The answer when 2xx or in `accept`; AuditError for anything else."""
        try:
            resp = self.client.get(path, params=params)
        except httpx.ConnectError as exc:
            raise AuditError(
                f"cannot reach the API at {self.base}: {_reason(exc)}; "
                "is `livelab-api serve` running?"
            ) from None
        except httpx.TimeoutException:
            raise AuditError(
                f"the API at {self.base} did not answer GET {path} within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise AuditError(f"cannot talk to the API at {self.base}: {_reason(exc)}") from None
        if resp.is_success or resp.status_code in accept:
            return resp
        detail = _detail(resp)
        if resp.status_code == 401:
            raise AuditError(
                f"the API refused the key (401): {detail}; check --api-key / LIVELAB_API_KEY"
            )
        raise AuditError(
            f"the API at {self.base} answered {resp.status_code} to GET {path}: {detail}"
        )

    def json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise AuditError(
                f"the answer of {self.base}{resp.request.url.path} is not JSON: is it the "
                "livelab API?"
            ) from None

    def check(self) -> None:
        """Reachable, the livelab API, and the key accepted (GET /v1/labs)."""
        resp = self.get("/v1/labs", accept=(404,))
        body = None if resp.status_code == 404 else self.json(resp)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise AuditError(f"{self.base} does not answer GET /v1/labs: is it the livelab API?")

    def stored(self, lab: str, start: datetime, end: datetime) -> Counter[SeriesKey] | None:
        """Readings per series in [start, end); None when the lab is a 404."""
        params = {
            "start": format_rfc3339(start.astimezone(UTC)),
            "end": format_rfc3339(end.astimezone(UTC)),
            "bucket": "1mo",
            "tz": "UTC",
            "stats": "count",
        }
        path = f"/v1/labs/{quote(lab, safe='')}/aggregates"
        resp = self.get(path, params, accept=(400, 404))
        if resp.status_code == 404:
            return None
        if resp.status_code == 400:
            detail = _detail(resp)
            if "limit" in detail and end - start > _MIN_SPLIT:
                # Too many buckets or rows for the server's limits: ask for each half.
                mid = start + (end - start) / 2
                first = self.stored(lab, start, mid)
                second = self.stored(lab, mid, end)
                return None if first is None or second is None else first + second
            raise AuditError(f"the API refused GET {path} with 400: {detail}")
        body = self.json(resp)
        return sum_counts(body["data"])

    def rejections(self, lab: str, since: datetime | None) -> int | None:
        """Rejected messages of the lab received at or after `since`; None when the lab is a 404."""
        path = f"/v1/labs/{quote(lab, safe='')}/rejections"
        params: dict[str, Any] = {"limit": REJECTION_PAGE}
        found = 0
        while True:
            resp = self.get(path, params, accept=(404,))
            if resp.status_code == 404:
                return None
            body = self.json(resp)
            for row in body["data"]:
                if since is not None and parse_rfc3339(row["received_at"]) < since:
                    return found
                found += row.get("count", 1)  # a row stands for `count` merged messages
            if not body.get("next"):
                return found
            params["cursor"] = body["next"]


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else (json.dumps(detail) if detail else resp.text)
    text = " ".join(text.split()) or resp.reason_phrase
    return text if len(text) <= 300 else text[:297] + "..."


def _range(
    manifest: Manifest, spec: LabManifest, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """The range to count readings in: the manifest's, or up to now (+1 s) with open_end."""
    if spec.open_end:
        start = spec.start or manifest.started_at
        end = now + _OPEN_END_SLACK
        if spec.end is not None and spec.end > end:
            end = spec.end
        return (start, end) if start is not None and start < end else (None, None)
    return spec.start, spec.end


def _observe(api: _Api, manifest: Manifest) -> dict[str, Observed]:
    now = datetime.now(UTC)
    observed: dict[str, Observed] = {}
    for name, spec in sorted(manifest.labs.items()):
        start, end = _range(manifest, spec, now)
        seen = Observed(start=start, end=end)
        if start is not None and end is not None:
            seen.stored = api.stored(name, start, end)
            if seen.stored is None:
                seen.error = _not_found(name)
        if seen.error is None:
            seen.rejections = api.rejections(name, manifest.started_at)
            if seen.rejections is None:
                seen.error = _not_found(name)
        observed[name] = seen
    return observed


def _not_found(lab: str) -> str:
    return (
        f"the API answers 404 for lab {lab!r}: the key may not read it, or (for an all-labs "
        "key) the lab holds no readings or rejections at all"
    )


def _progress(manifest: Manifest, observed: Mapping[str, Observed]) -> str:
    stored = sum(sum((seen.stored or Counter()).values()) for seen in observed.values())
    expected = sum(spec.readings for spec in manifest.labs.values())
    text = f"waiting for ingest: {stored} of {expected} readings stored"
    want = sum(spec.rejections for spec in manifest.labs.values())
    found = sum(seen.rejections or 0 for seen in observed.values())
    if found < want:
        text += f", {found} of {want} rejections"
    return text


def audit(
    manifest: Manifest,
    *,
    api_url: str,
    api_key: str,
    wait: float = DEFAULT_WAIT,
    timeout: float = 10.0,
    strict_rejections: bool = False,
    poll_interval: float = 0.5,
) -> AuditReport:
    """Ask the API what the run's labs hold and compare with `manifest`.

    Polls until every count matches or no count changed for `wait` seconds. Raises
    `AuditError` when the API cannot be reached, refuses the key or fails (5xx).
    """
    base = api_url.rstrip("/")
    began = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        api = _Api(client, base, timeout)
        api.check()
        observed = _observe(api, manifest)
        last_key = [seen.key() for seen in observed.values()]
        changed = logged = time.monotonic()
        if not settled(manifest, observed) and wait > 0:
            log.info("%s", _progress(manifest, observed))
        took = time.monotonic() - began
        while not settled(manifest, observed) and time.monotonic() - changed < wait:
            # Never ask more often than one round of questions takes (a big lab's aggregate).
            pause = max(poll_interval, took)
            time.sleep(min(pause, max(0.0, wait - (time.monotonic() - changed))))
            asked = time.monotonic()
            observed = _observe(api, manifest)
            took = time.monotonic() - asked
            key = [seen.key() for seen in observed.values()]
            progressed = key != last_key
            if progressed:
                last_key, changed = key, time.monotonic()
            if progressed or time.monotonic() - logged >= _LOG_EVERY:
                log.info("%s", _progress(manifest, observed))
                logged = time.monotonic()
        if not settled(manifest, observed):
            log.info("no change for %g s: reporting what is stored", wait)
    return build_report(
        manifest,
        observed,
        api_url=base,
        strict_rejections=strict_rejections,
        waited=time.monotonic() - began,
    )


# ---------------------------------------------------------------------------------------------
# CLI glue (wired into `livelab-sim audit` and `--verify` by simulators.__main__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The audit's options: --api-url, --api-key, --wait, --strict-rejections, --json."""
    g = parser.add_argument_group("delivery audit (asks the HTTP API)")
    g.add_argument(
        "--api-url",
        default=os.environ.get("LIVELAB_API_URL", DEFAULT_API_URL),
        metavar="URL",
        help=f"the livelab API (env LIVELAB_API_URL; default {DEFAULT_API_URL})",
    )
    g.add_argument(
        "--api-key",
        default=os.environ.get("LIVELAB_API_KEY"),
        metavar="KEY",
        help="an API key that may read the run's labs (env LIVELAB_API_KEY; required one way "
        "or the other; make one with `livelab-api create-key --name audit --lab LAB`)",
    )
    g.add_argument(
        "--wait",
        type=non_negative_float,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help="while ingest catches up, keep asking until no count changed for this long "
        "(default %(default)g)",
    )
    g.add_argument(
        "--strict-rejections",
        action="store_true",
        help="more rejections than injected fail the audit (by default they are only "
        "reported: a message redelivered after a worker crash is rejected twice)",
    )
    g.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")


def run_audit(manifest: Manifest, args: argparse.Namespace) -> int:
    """Audit, print the table; 0 ok, 1 failed, 2 usage error, 3 API unavailable."""
    key = getattr(args, "api_key", None)
    if not key:
        print(
            "livelab-sim: error: the audit needs an API key: give --api-key KEY or set "
            "LIVELAB_API_KEY (make one with `livelab-api create-key --name audit --lab LAB`)",
            file=sys.stderr,
        )
        return 2
    try:
        report = audit(
            manifest,
            api_url=getattr(args, "api_url", None) or DEFAULT_API_URL,
            api_key=key,
            wait=getattr(args, "wait", DEFAULT_WAIT),
            strict_rejections=bool(getattr(args, "strict_rejections", False)),
        )
    except AuditError as exc:
        print(f"livelab-sim: error: {exc}", file=sys.stderr)
        return 3
    print(report.format_table(), end="", flush=True)
    path = getattr(args, "json", None)
    if path:
        try:
            write_json(path, report.to_json())
        except OSError as exc:
            print(
                f"livelab-sim: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr
            )
            return 2
    return 0 if report.ok else 1
