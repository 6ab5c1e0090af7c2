"""Opaque pagination cursors: URL-safe base64 of a small JSON list. Clients pass `next` back
unchanged; anything else answers 400."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from api.params import bad_request

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INVALID = "cursor: not a valid cursor; pass the `next` value of the previous page unchanged"


def encode(*parts: Any) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, *types: type) -> list[Any]:
    """The cursor's parts, checked against `types`; 400 when it is not one we made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(types)
        or not all(type(p) is t for p, t in zip(parts, types, strict=True))
    ):
        raise bad_request(_INVALID)
    return parts


def check_int(value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise bad_request(_INVALID)
    return value


def to_micros(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise bad_request(_INVALID) from None
