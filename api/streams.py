"""Aggregate answers streamed in chunks: rows from a server-side cursor are shaped (long or
wide layout, `fill=null`) and encoded (orjson, or CSV) a chunk at a time, so a large answer is
never held in memory whole and the event loop serves other requests between chunks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncCursor
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

Row = tuple[Any, ...]  # from the query: series id, bucket key, stats...
SeriesName = tuple[str, str]

CHUNK_ROWS = 5000


async def fetch_chunks(cur: AsyncCursor[Row], first: list[Row]) -> AsyncIterator[list[Row]]:
    """The cursor's rows (series id, key, stats...), CHUNK_ROWS at a time, from `first` on."""
    rows = first
    while rows:
        yield rows
        rows = await cur.fetchmany(CHUNK_ROWS)


def empty_stats(stats: Sequence[str]) -> tuple[Any, ...]:
    return tuple(0 if s == "count" else None for s in stats)


class Shaper:
    """Turns the query's rows into answer records, chunk by chunk.

    `long`: one record per series and bucket. `wide`: one per bucket, with one column per
    series and stat (`{device}/{sensor}/{stat}`); a series without readings in a bucket has
    count 0 and null for the other stats there.
    """

    def __init__(
        self,
        *,
        layout: str,
        stats: Sequence[str],
        names: dict[int, SeriesName],
        starts: Sequence[datetime],
        keyed: bool,
        fill: bool,
        label: Callable[[datetime], str],
    ) -> None:
        """`names`: series id -> (device, sensor), in answer order. `keyed`: the query's key is
        an index into `starts` (calendar buckets), else the bucket's start itself."""
        self.layout = layout
        self.stats = list(stats)
        self.names = names
        self.keyed = keyed
        self.series = list(names.values())
        self.starts = starts
        self.fill = fill
        self.label = label
        self._blank = empty_stats(stats)
        self._index: dict[datetime, int] | None = None
        if layout == "wide":
            self.columns = ["bucket"] + [
                f"{d}/{s}/{stat}" for d, s in self.series for stat in self.stats
            ]
            self._slot = {name: i for i, name in enumerate(self.series)}
            self._pending: tuple[datetime, list[Any]] | None = None
            self._next_start = 0  # index into starts of the next bucket to emit (fill)
        else:
            self.columns = ["device", "sensor", "bucket", *self.stats]
            self._cursor = (0, 0)  # (series index, start index) of the next record (fill)

    # -- long -------------------------------------------------------------------------------

    def _named(self, rows: list[Row]) -> list[Row]:
        """(device, sensor, bucket start, stats...) for the query's rows."""
        names, starts = self.names, self.starts
        if self.keyed:
            return [(*names[r[0]], starts[r[1]], *r[2:]) for r in rows]
        return [(*names[r[0]], *r[1:]) for r in rows]

    def _long(self, rows: list[Row], last: bool) -> list[Sequence[Any]]:
        names, starts, label = self.names, self.starts, self.label
        if not self.fill:
            # The bulk of large answers: one tuple per row, straight from the database's.
            if self.keyed:
                return [(*names[r[0]], label(starts[r[1]]), *r[2:]) for r in rows]
            return [(*names[r[0]], label(r[1]), *r[2:]) for r in rows]
        out: list[Sequence[Any]] = []
        rows = self._named(rows)
        si, bi = self._cursor
        series, starts, blank = self.series, self.starts, self._blank
        pos = {name: i for i, name in enumerate(series)} if rows else {}
        for r in rows:
            target = (pos[(r[0], r[1])], self._start_index(r[2]))
            while (si, bi) < target:
                d, s = series[si]
                out.append([d, s, label(starts[bi]), *blank])
                si, bi = (si, bi + 1) if bi + 1 < len(starts) else (si + 1, 0)
            out.append([r[0], r[1], label(r[2]), *r[3:]])
            si, bi = (si, bi + 1) if bi + 1 < len(starts) else (si + 1, 0)
        if last:
            while si < len(series):
                d, s = series[si]
                out.append([d, s, label(starts[bi]), *blank])
                si, bi = (si, bi + 1) if bi + 1 < len(starts) else (si + 1, 0)
        self._cursor = (si, bi)
        return out

    def _start_index(self, b: datetime) -> int:
        if self._index is None:  # only `fill` and wide answers need it
            self._index = {t: i for i, t in enumerate(self.starts)}
        return self._index[b]

    # -- wide -------------------------------------------------------------------------------

    def _blank_wide(self, b: datetime) -> list[Any]:
        return [self.label(b), *(self._blank * len(self.series))]

    def _wide(self, rows: list[Row], last: bool) -> list[Sequence[Any]]:
        out: list[Sequence[Any]] = []
        rows = self._named(rows)
        width = len(self.stats)
        pending = self._pending
        for r in rows:
            b = r[2]
            if pending is None or pending[0] != b:
                if pending is not None:
                    out.append(pending[1])
                if self.fill:
                    stop = self._start_index(b)
                    out.extend(
                        self._blank_wide(self.starts[i]) for i in range(self._next_start, stop)
                    )
                    self._next_start = stop + 1
                pending = (b, self._blank_wide(b))
            at = 1 + self._slot[(r[0], r[1])] * width
            pending[1][at : at + width] = r[3:]
        if last:
            if pending is not None:
                out.append(pending[1])
                pending = None
            if self.fill:
                out.extend(
                    self._blank_wide(self.starts[i])
                    for i in range(self._next_start, len(self.starts))
                )
                self._next_start = len(self.starts)
        self._pending = pending
        return out

    def records(self, rows: list[Row], last: bool) -> list[Sequence[Any]]:
        return self._wide(rows, last) if self.layout == "wide" else self._long(rows, last)


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that, once sent or abandoned (the client went away), closes its
    body and then awaits `on_close`, before FastAPI returns the request's connection to the
    pool. (Starlette leaves an abandoned body iterator to the garbage collector, which could
    close a cursor after its connection serves another request.)"""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]],
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._content = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._on_close()


_NULL_FIELD = re.compile(rb",null(?=[,\]])")


def csv_lines(records: list[Sequence[Any]]) -> bytes:
    """CSV lines of `records`, formatted by orjson (numbers as JSON writes them, which Python
    and spreadsheets read back exactly; null as an empty field).

    Only safe because no field needs CSV quoting: device and sensor names cannot hold a comma,
    a quote or a bracket (`schemas.names`), and buckets and numbers never do. The first field
    is never null (a name or a bucket).
    """
    if not records:
        return b""
    body = orjson.dumps(records)
    body = _NULL_FIELD.sub(b",", body)  # the look-ahead leaves the next comma for the next null
    return body[2:-2].replace(b"],[", b"\n").replace(b'"', b"") + b"\n"


def json_objects(keys: Sequence[bytes], records: list[Sequence[Any]]) -> bytes:
    """``{key: field, ...}`` objects of `records`, comma-separated, from one orjson array dump.

    The same dump as with one dict per record, built without the dicts (which cost three
    quarters of the encoding): orjson writes the records as arrays, whose fields are then
    interleaved with the keys (`keys`: each column name already as a JSON string). Only safe
    because no field holds a comma or a bracket (see `csv_lines`).
    """
    if not records:
        return b""
    fields = orjson.dumps(records)[2:-2].replace(b"],[", b",").split(b",")
    first = [b"{" + keys[0] + b":", *(b"," + k + b":" for k in keys[1:])]
    later = [b"},{" + keys[0] + b":", *first[1:]]
    out: list[bytes] = [b""] * (2 * len(fields))
    out[::2] = first + later * (len(records) - 1)
    out[1::2] = fields
    return b"".join(out) + b"}"


async def encode(
    chunks: AsyncIterator[list[Row]], shaper: Shaper, fmt: str
) -> AsyncIterator[bytes]:
    """The answer's bytes: JSON ``{"data": [...], "next": null}`` or CSV with a header row."""
    columns = shaper.columns
    if fmt == "csv":
        yield (",".join(columns) + "\n").encode()
        async for rows in chunks:
            yield csv_lines(shaper.records(rows, last=False))
        yield csv_lines(shaper.records([], last=True))
        return

    yield b'{"data":['
    first = True
    keys = [orjson.dumps(c) for c in columns]

    def dump(records: list[Sequence[Any]]) -> bytes:
        nonlocal first
        if not records:
            return b""
        body = json_objects(keys, records)
        if first:
            first = False
            return body
        return b"," + body

    async for rows in chunks:
        yield dump(shaper.records(rows, last=False))
    yield dump(shaper.records([], last=True)) + b'],"next":null}'
