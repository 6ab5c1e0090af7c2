"""The delivery audit: did every reading a run sent end up stored, exactly once? `audit` asks
the API (`apiclient`), per lab of the manifest, for each series' readings in [start, end) and
the rejections since the run started, polling while ingest catches up, and `build_report`
compares: a series is ok, missing, doubled or unexpected; anything but ok fails."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from simulators.apiclient import AuditApi, SeriesKey
from simulators.errors import AuditError
from simulators.manifest import Manifest, write_json
from simulators.report import AuditReport, LabAudit, Rejections, SeriesRow, Status

log = logging.getLogger(__name__)

DEFAULT_WAIT = 30.0
_OPEN_END_SLACK = timedelta(seconds=1)
_LOG_EVERY = 5.0  # seconds between progress lines while nothing changes
REDELIVERY_NOTE = (
    "not a failure: the ingest worker records a rejection once per delivery, so a message "
    "redelivered after a worker crash is recorded twice (and any other rejection of the lab "
    "since the run started is counted too); --strict-rejections makes this a failure"
)


@dataclass
class Observed:
    """What the API answered for one lab at one poll."""

    start: datetime | None = None  # the range asked for; None: readings not checked
    end: datetime | None = None
    stored: Counter[SeriesKey] | None = None  # None: not asked (no range) or 404
    rejections: int | None = None  # None: 404
    error: str | None = None  # the lab could not be audited (404)


def compare_series(
    lab: str, expected: Mapping[SeriesKey, int], stored: Mapping[SeriesKey, int]
) -> list[SeriesRow]:
    """A row per series of either side, in byte order of (device, sensor)."""
    rows = []
    for key in sorted(set(expected) | {k for k, n in stored.items() if n}):
        want, have = expected.get(key, 0), stored.get(key, 0)
        status: Status = "unexpected" if key not in expected else "ok"
        if key in expected and have != want:
            status = "missing" if have < want else "doubled"
        row = {"device": key[0], "sensor": key[1], "expected": want, "stored": have}
        rows.append(SeriesRow(lab=lab, status=status, **row))
    return rows


def build_report(
    manifest: Manifest, observed: Mapping[str, Observed], *, api_url: str = "",
    strict_rejections: bool = False, waited: float = 0.0,
) -> AuditReport:  # fmt: skip
    """Compare what the API answered (`observed`, per lab) with the manifest."""
    m = manifest
    report = AuditReport(
        mode=m.mode, scenario=m.scenario, seed=m.seed, started_at=m.started_at,
        complete=m.complete, api_url=api_url, strict_rejections=strict_rejections,
        waited_seconds=round(waited, 3),
    )  # fmt: skip
    if not m.complete:
        report.notes.append(
            "the run was incomplete (stopped early, or not every message was acknowledged): "
            "the manifest counts the messages handed to the MQTT client, so a message the "
            "broker never got shows up as missing; missing readings fail the audit all the same"
        )
    if not m.labs:
        report.notes.append("the manifest names no lab: nothing to audit")
    if m.started_at is None:
        report.notes.append(
            "the manifest has no started_at: every rejection the API lists for a lab is counted"
        )
    for name, spec in sorted(m.labs.items()):
        seen = observed.get(name, Observed())
        lab = LabAudit(
            lab=name, start=seen.start, end=seen.end, open_end=spec.open_end, error=seen.error,
            rejections=Rejections(expected=spec.rejections, found=seen.rejections),
            series=compare_series(name, spec.series, seen.stored or Counter()),
        )  # fmt: skip
        report.labs.append(lab)
        if seen.error is not None:
            report.problems.append(f"{name}: {seen.error}")
            continue
        if seen.stored is None and spec.readings:
            report.problems.append(f"{name}: readings were not checked (the manifest has no range)")
        elif seen.stored is None:
            report.notes.append(f"{name}: no readings expected and no range: readings not checked")
        for status, template in (
            ("missing", "{n} reading(s) missing in {k} series"),
            ("doubled", "{n} reading(s) more than expected (doubled) in {k} series"),
            ("unexpected", "{n} unexpected reading(s) in {k} series the manifest does not name"),
        ):
            if bad := [r for r in lab.series if r.status == status]:
                what = template.format(n=sum(abs(r.diff) for r in bad), k=len(bad))
                shown = ", ".join(f"{r.device}/{r.sensor} {r.diff:+d}" for r in bad[:5])
                more = f", and {len(bad) - 5} more" if len(bad) > 5 else ""
                report.problems.append(f"{name}: {what} ({shown}{more})")
        found, want = seen.rejections, spec.rejections
        if found is not None and found < want:
            report.problems.append(
                f"{name}: {want - found} rejection(s) missing ({found} of {want} found since "
                "the run started): a rejection lost is a message dropped in silence"
            )
        elif found is not None and found > want:
            text = f"{name}: {found - want} more rejection(s) than the run injected "
            text += f"({found} found, {want} expected)"
            if strict_rejections:
                report.problems.append(text + " (--strict-rejections)")
            else:
                report.notes.append(f"{text}; {REDELIVERY_NOTE}")
    return report


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


def _observe(api: AuditApi, manifest: Manifest) -> dict[str, Observed]:
    now = datetime.now(UTC)
    observed: dict[str, Observed] = {}
    for name, spec in sorted(manifest.labs.items()):
        start, end = spec.start, spec.end
        if spec.open_end:  # up to now (+1 s): ingest stamps form 1 readings on receipt
            start = spec.start or manifest.started_at
            end = max(now + _OPEN_END_SLACK, spec.end or now)
            if start is None or start >= end:
                start = end = None
        seen = Observed(start=start, end=end)
        if start is not None and end is not None:
            seen.stored = api.stored(name, start, end)
        if seen.stored is not None or start is None:
            seen.rejections = api.rejections(name, manifest.started_at)
        if (start is not None and seen.stored is None) or seen.rejections is None:
            seen.error = (
                f"the API answers 404 for lab {name!r}: the key may not read it, or (for an "
                "all-labs key) the lab holds no readings or rejections at all"
            )
        observed[name] = seen
    return observed


def _progress(manifest: Manifest, observed: Mapping[str, Observed]) -> str:
    stored = sum(sum((seen.stored or Counter()).values()) for seen in observed.values())
    expected = sum(spec.readings for spec in manifest.labs.values())
    text = f"waiting for ingest: {stored} of {expected} readings stored"
    want = sum(spec.rejections for spec in manifest.labs.values())
    found = sum(seen.rejections or 0 for seen in observed.values())
    return text + (f", {found} of {want} rejections" if found < want else "")


def audit(
    manifest: Manifest, *, api_url: str, api_key: str, wait: float = DEFAULT_WAIT,
    timeout: float = 10.0, strict_rejections: bool = False, poll_interval: float = 0.5,
) -> AuditReport:  # fmt: skip
    """Ask the API what the run's labs hold and compare with `manifest`, polling until every
    count matches or no count changed for `wait` seconds. Raises `AuditError` when the API
    cannot be reached, refuses the key or fails (5xx)."""
    began = time.monotonic()
    with AuditApi(api_url, api_key, timeout) as api:
        api.check()
        last_key: list[Any] | None = None
        changed = logged = began
        while True:
            asked = time.monotonic()
            observed = _observe(api, manifest)
            now = time.monotonic()
            if settled(manifest, observed):
                break
            # A change of these is progress (the range's end moves with open_end: left out).
            key = [(seen.stored, seen.rejections, seen.error) for seen in observed.values()]
            if progressed := key != last_key:
                last_key, changed = key, now
            if now - changed >= wait:
                log.info("no change for %g s: reporting what is stored", wait)
                break
            if progressed or now - logged >= _LOG_EVERY:
                log.info("%s", _progress(manifest, observed))
                logged = now
            # Never ask more often than one round of questions takes (a big lab's aggregate).
            time.sleep(min(max(poll_interval, now - asked), wait - (now - changed)))
    return build_report(
        manifest, observed, api_url=api.base, strict_rejections=strict_rejections,
        waited=time.monotonic() - began,
    )  # fmt: skip


def run_audit(
    manifest: Manifest, *, api_url: str, api_key: str | None, wait: float = DEFAULT_WAIT,
    strict_rejections: bool = False, json_path: str | Path | None = None,
) -> int:  # fmt: skip
    """Audit and print the table (``livelab-sim audit`` and ``--verify``): 0 ok, 1 failed,
    2 usage error (no key, report not writable), 3 the API could not be asked."""
    if not api_key:
        print(
            "livelab-sim: error: the audit needs an API key: give --api-key KEY or set "
            "LIVELAB_API_KEY (make one with `livelab-api create-key --name audit --lab LAB`)",
            file=sys.stderr,
        )
        return 2
    try:
        report = audit(
            manifest, api_url=api_url, api_key=api_key, wait=wait,
            strict_rejections=strict_rejections,
        )  # fmt: skip
    except AuditError as exc:
        print(f"livelab-sim: error: {exc}", file=sys.stderr)
        return 3
    print(report.format_table(), end="", flush=True)
    if json_path:
        try:
            write_json(json_path, report.model_dump(mode="json"))
        except OSError as exc:
            print(f"livelab-sim: error: cannot write {json_path}: {exc.strerror}", file=sys.stderr)
            return 2
    return 0 if report.ok else 1
