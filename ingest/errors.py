"""Errors of the ingest worker.

    IngestError
    ├── StorageUnavailable   the database cannot be reached or is restarting: retry, never drop
    └── StorageRefused       the database refused the batch's data: store message by message and
                             record what still fails as a rejection

Problems with a message's content are not exceptions: `ingest.parse` turns them into
`Rejection` records, which are stored like readings.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base class of the ingest worker's errors."""


class StorageUnavailable(IngestError):
    """The database is unreachable or restarting; the operation can be retried as it is."""


class StorageRefused(IngestError):
    """The database refused the data itself (not a connection problem)."""
