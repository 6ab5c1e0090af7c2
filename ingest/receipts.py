"""Exactly once for readings stamped with their receive time (pure logic, no I/O).

Telemetry form 1 (`{"no2": 17.4}`) and SenML records with relative times take their time from
the worker's receive time. The (series, time) key cannot tell a redelivery of such a message
from a new reading, so the broker's redelivery after a crash between COMMIT and PUBACK (or after
a connection loss that swallowed the PUBACK) would store it again, a few seconds later.

The worker therefore writes a *receipt* for each such message in the same transaction as its
readings: (client id, packet id) -> (digest of topic and payload, receive time, `seq`), where
`seq` is the client's count of committed QoS 1 messages after that commit. A redelivered copy
arrives with the DUP flag and its original packet id (MQTT 5 section 4.4: a resumed session
resends unacknowledged PUBLISH packets "using their original Packet Identifiers"); when the
receipt of that packet id has the same digest and is recent, the copy is parsed with the first
delivery's receive time, so its readings already exist and nothing is stored twice.

"Recent" is what keeps a new reading from being mistaken for a redelivery. A packet id names a
message only until it is acknowledged; Mosquitto then hands ids out in sequence (its
`mid_generate` counts up to 65 535 and wraps), so the previous message with the same id was
65 535 deliveries earlier. All but at most Receive Maximum of those were committed. A true
redelivery, on the other hand, is of a message committed at most a queue's length before its
connection ended. Receipts more than `REDELIVERY_WINDOW` commits old are therefore ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime

# Between the largest possible distance of a true redelivery (the worker's queue plus Receive
# Maximum: a few thousand) and the smallest of a reused packet id (65 535 - Receive Maximum).
REDELIVERY_WINDOW = 32_768
# Parsed batches that may wait for the worker's writer; part of what a worker holds at once,
# which ingest.settings keeps below the window.
PARSED_AHEAD = 2


def digest(topic: str, payload: bytes) -> bytes:
    """16 bytes that tell one message's topic and payload from another's."""
    h = hashlib.blake2b(topic.encode("utf-8", "surrogateescape"), digest_size=16)
    h.update(b"\0")
    h.update(payload)
    return h.digest()


def first_receive_time(
    found: Mapping[int, tuple[bytes, datetime, int]], committed: int, mid: int, digest: bytes
) -> datetime | None:
    """The receive time of this redelivered message's first, committed delivery, if any.

    `found` maps packet ids to receipts (digest, received_at, seq); `committed` is the client's
    committed count now.
    """
    entry = found.get(mid)
    if entry is None:
        return None
    stored_digest, received_at, seq = entry
    if stored_digest != digest or committed - seq >= REDELIVERY_WINDOW:
        return None
    return received_at
