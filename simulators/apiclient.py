"""`AuditApi`: the audit's questions to the livelab API, every failure an `AuditError` that
says what to do. Readings per series come from ``/aggregates?bucket=1mo&stats=count``
(a refused range is asked in halves, down to two months); rejections since the run started
from ``/rejections``, paged newest first (the endpoint has no time filter).
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from schemas.times import format_rfc3339, parse_rfc3339
from simulators.errors import AuditError

SeriesKey = tuple[str, str]  # (device, sensor)
REJECTION_PAGE = 1000  # the API's largest page
MIN_SPLIT = timedelta(days=62)  # never split a refused range shorter than this


def _reason(exc: BaseException) -> str:
    """'connection refused' when that is what the error comes down to, else its text."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ConnectionRefusedError):
        cause = cause.__cause__ or cause.__context__
    return "connection refused" if cause else str(exc) or type(exc).__name__


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else (json.dumps(detail) if detail else resp.text)
    return textwrap.shorten(text, 300, placeholder="...") or resp.reason_phrase


class AuditApi(httpx.Client):
    """An HTTP client on the API at `base` with a bearer key."""

    def __init__(self, base: str, key: str, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        super().__init__(base_url=self.base, headers=headers, timeout=timeout)

    def ask(self, path: str, params: dict[str, Any], accept: tuple[int, ...] = ()) -> Any:
        """The JSON answer when 2xx, the response when its status is in `accept`;
        AuditError for anything else."""
        try:
            resp = self.get(path, params=params)
        except httpx.TimeoutException:
            raise AuditError(
                f"the API at {self.base} did not answer GET {path} within {self.timeout.read:g} s"
            ) from None
        except httpx.TransportError as exc:
            connect = isinstance(exc, httpx.ConnectError)
            hint = "; is `livelab-api serve` running?" if connect else ""
            raise AuditError(f"cannot reach the API at {self.base}: {_reason(exc)}{hint}") from None
        if resp.status_code in accept:
            return resp
        if resp.status_code == 401:
            raise AuditError(
                f"the API refused the key (401): {_detail(resp)}; check --api-key / LIVELAB_API_KEY"
            )
        if not resp.is_success:
            raise AuditError(
                f"the API at {self.base} answered {resp.status_code} to GET {path}: {_detail(resp)}"
            )
        try:
            return resp.json()
        except ValueError:
            raise AuditError(
                f"the answer of {self.base}{path} is not JSON: is it the livelab API?"
            ) from None

    def check(self) -> None:
        """Reachable, the livelab API, and the key accepted (GET /v1/labs)."""
        body = self.ask("/v1/labs", {}, accept=(404,))
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise AuditError(f"{self.base} does not answer GET /v1/labs: is it the livelab API?")

    def stored(self, lab: str, start: datetime, end: datetime) -> Counter[SeriesKey] | None:
        """Readings per series in [start, end); None when the lab is a 404."""
        params = {
            "start": format_rfc3339(start.astimezone(UTC)),
            "end": format_rfc3339(end.astimezone(UTC)),
            **{"bucket": "1mo", "tz": "UTC", "stats": "count"},
        }
        path = f"/v1/labs/{quote(lab, safe='')}/aggregates"
        body = self.ask(path, params, accept=(400, 404))
        if not isinstance(body, httpx.Response):
            counts: Counter[SeriesKey] = Counter()
            for row in body["data"]:  # one per series and bucket
                counts[(str(row["device"]), str(row["sensor"]))] += int(row["count"] or 0)
            return counts
        if body.status_code == 404:
            return None
        if end - start <= MIN_SPLIT:
            raise AuditError(f"the API refused GET {path} with 400: {_detail(body)}")
        mid = start + (end - start) / 2  # too many buckets or rows: ask for each half
        first, second = self.stored(lab, start, mid), self.stored(lab, mid, end)
        return None if first is None or second is None else first + second

    def rejections(self, lab: str, since: datetime | None) -> int | None:
        """Rejections of the lab received at or after `since`; None when the lab is a 404."""
        path = f"/v1/labs/{quote(lab, safe='')}/rejections"
        params: dict[str, Any] = {"limit": REJECTION_PAGE}
        found = 0
        while True:
            body = self.ask(path, params, accept=(404,))
            if isinstance(body, httpx.Response):  # 404
                return None
            for row in body["data"]:
                if since is not None and parse_rfc3339(row["received_at"]) < since:
                    return found
                found += row.get("count", 1)  # one row stands for `count` merged repeats
            if not body.get("next"):
                return found
            params["cursor"] = body["next"]
