"""API keys: generation, hashing, and the rows of ``api_keys``.

A key is ``llk_`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 is
stored, with its first 12 characters (`prefix`) so people can tell keys apart in lists. The
scope `labs` is a list of lab names; ``'*'`` means every lab.

The functions taking a `psycopg.Connection` serve the CLI and the tests; the API looks keys up
through `KeyCache` on its async pool.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from schemas.names import describe_bad_name, is_lab

KEY_PREFIX = "llk_"
PREFIX_LENGTH = 12
ALL_LABS = "*"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_KEY_LENGTH = len(KEY_PREFIX) + 43  # token_urlsafe(32): 43 characters of A-Z a-z 0-9 - _
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def is_well_formed(key: str) -> bool:
    """Could `key` be one `generate_key` made? (Anything else is refused without a lookup.)"""
    body = key[len(KEY_PREFIX) :]
    return len(key) == _KEY_LENGTH and key.startswith(KEY_PREFIX) and _KEY_CHARS.issuperset(body)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    labs: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def all_labs(self) -> bool:
        return ALL_LABS in self.labs

    def may_see(self, lab: str) -> bool:
        return self.all_labs or lab in self.labs


def check_labs(labs: list[str]) -> list[str]:
    """The scope, validated and de-duplicated; raise ValueError naming a bad lab."""
    if not labs:
        raise ValueError("a key needs at least one lab (or '*' for every lab)")
    out: list[str] = []
    for lab in labs:
        if lab != ALL_LABS and not is_lab(lab):
            raise ValueError(describe_bad_name("lab", lab))
        if lab not in out:
            out.append(lab)
    return [ALL_LABS] if ALL_LABS in out else out


def create_key(conn: psycopg.Connection, name: str, labs: list[str]) -> tuple[str, KeyInfo]:
    """Create a key scoped to `labs`; return the key (shown once, never stored) and its row."""
    if not name.strip():
        raise ValueError("a key needs a non-empty name")
    scope = check_labs(labs)
    key = generate_key()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO api_keys (name, prefix, key_hash, labs) VALUES (%s, %s, %s, %s) "
            "RETURNING id, name, prefix, labs, created_at, revoked_at",
            (name, key[:PREFIX_LENGTH], hash_key(key), scope),
        )
        row = cur.fetchone()
    conn.commit()
    assert row is not None
    return key, _info(row)


def list_keys(conn: psycopg.Connection) -> list[KeyInfo]:
    rows = conn.execute(
        "SELECT id, name, prefix, labs, created_at, revoked_at FROM api_keys ORDER BY id"
    ).fetchall()
    return [_info(row) for row in rows]


def revoke_key(conn: psycopg.Connection, prefix_or_name: str) -> list[KeyInfo]:
    """Revoke the active keys whose prefix or name is `prefix_or_name`; return them.

    Raises LookupError when no active key matches, or when a name matches several keys
    (revoke those by prefix instead).
    """
    rows = conn.execute(
        "SELECT id, name, prefix, labs, created_at, revoked_at FROM api_keys "
        "WHERE (prefix = %s OR name = %s) AND revoked_at IS NULL ORDER BY id",
        (prefix_or_name, prefix_or_name),
    ).fetchall()
    found = [_info(row) for row in rows]
    if not found:
        raise LookupError(f"no active key has the prefix or name {prefix_or_name!r}")
    if len(found) > 1:
        listed = ", ".join(k.prefix for k in found)
        raise LookupError(
            f"{len(found)} active keys match {prefix_or_name!r} ({listed}); "
            "revoke them one at a time by prefix"
        )
    revoked = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = %s "
        "RETURNING id, name, prefix, labs, created_at, revoked_at",
        (found[0].id,),
    ).fetchall()
    conn.commit()
    return [_info(row) for row in revoked]


def _info(row: tuple) -> KeyInfo:  # type: ignore[type-arg]
    return KeyInfo(row[0], row[1], row[2], tuple(row[3]), row[4], row[5])


class KeyCache:
    """Looks keys up by hash, remembering answers (also "no such key") for `ttl` seconds.
    Valid keys and misses are kept apart, each bounded to `max_entries`: a flood of random keys
    evicts only the oldest misses, never a valid key."""

    def __init__(self, pool: AsyncConnectionPool, *, ttl: float = 30.0, max_entries: int = 10_000):
        self._pool = pool
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[float, KeyInfo | None]] = {}  # valid keys
        self._misses: dict[bytes, tuple[float, KeyInfo | None]] = {}  # in insertion order

    async def lookup(self, key: str) -> KeyInfo | None:
        """The active key's row, or None when the key is unknown or revoked."""
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest) or self._misses.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, name, prefix, labs, created_at, revoked_at FROM api_keys "
                "WHERE key_hash = %s",
                (digest,),
            )
            row = await cur.fetchone()
        info = _info(row) if row is not None else None
        if info is not None and info.revoked_at is not None:
            info = None
        if self._ttl > 0:
            entries = self._entries if info is not None else self._misses
            entries.pop(digest, None)
            if info is None:
                self._entries.pop(digest, None)  # revoked since
            while len(entries) >= self._max_entries:
                del entries[next(iter(entries))]  # the oldest
            entries[digest] = (now + self._ttl, info)
        return info
