"""The on-disk spool: every record accepted but not yet acknowledged by Kinesis.

A SQLite database in WAL mode holds the records in the order they were accepted. The producer
appends before it sends and removes only what Kinesis acknowledged, so a network or Kinesis
outage, a crash or a kernel restart loses nothing: the next producer on the same file sends the
leftovers first, oldest first per partition key.

Durability: ``synchronous=NORMAL`` in WAL mode survives a crash of the process or the kernel of a
notebook; only a power cut can lose the last transactions. One producer at a time owns a spool
(an exclusive ``flock`` on ``<path>.lock``), because two senders on one file would interleave
their records. The bound counts payload bytes (data + partition key); reaching it raises
:class:`~hrnb.errors.SpoolFullError` and stores nothing of that append.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

from hrnb.boundary import file_errors
from hrnb.errors import ConfigError, ProducerError, SpoolFullError
from hrnb.wire.records import MAX_RECORD_BYTES

logger = logging.getLogger(__name__)

#: Default bound on the payload held: about 1 million records of 250 bytes.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY,
    partition_key TEXT NOT NULL,
    data BLOB NOT NULL,
    accepted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_by_key ON spool (partition_key, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class SpoolEntry:
    """A record to spool: its Kinesis partition key, its encoded bytes, when it was accepted."""

    partition_key: str
    data: bytes
    accepted_at: float  # Unix time, seconds

    @property
    def size(self) -> int:
        """Bytes counted against the spool bound (and against a PutRecords request)."""
        return len(self.data) + len(self.partition_key.encode())


@dataclass(frozen=True)
class SpooledRecord(SpoolEntry):
    """A spooled entry with its position: ids grow in acceptance order."""

    id: int


@dataclass(frozen=True)
class SpoolStats:
    """How much the spool holds right now."""

    records: int
    bytes: int
    max_bytes: int


class Spool:
    """An ordered, size-bounded, crash-safe queue of encoded records on local disk.

    Thread-safe (one connection behind a lock), so async callers can use it through
    ``asyncio.to_thread``. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        destination: str | None = None,
    ) -> None:
        """Open (or create) the spool; ``destination`` names where its records go.

        Leftover records are only handed to a producer for the same destination: a spool
        holding records for another stream raises ProducerError instead of misdelivering them.
        """
        if max_bytes < MAX_RECORD_BYTES:
            raise ConfigError(
                f"spool max_bytes must be at least {MAX_RECORD_BYTES} (one Kinesis record), "
                f"got {max_bytes}",
                setting="max_spool_bytes",
            )
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        with file_errors("open the spool", self.path, error=ProducerError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = _acquire_owner_lock(self.path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            records, size = self._db.execute(
                "SELECT COUNT(*),"
                " COALESCE(SUM(LENGTH(data) + LENGTH(CAST(partition_key AS BLOB))), 0) FROM spool"
            ).fetchone()
            if destination is not None:
                self._claim(destination, records)
        except sqlite3.Error as exc:
            self.close()
            raise ProducerError(f"cannot open the spool {self.path}: {exc}") from exc
        except ProducerError:
            self.close()
            raise
        self._records = int(records)
        self._bytes = int(size)
        if self._records:
            logger.info("spool %s holds %s records from an earlier run", self.path, self._records)

    def _claim(self, destination: str, records: int) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'destination'").fetchone()
        if row is not None and row[0] != destination and records:
            raise ProducerError(
                f"the spool {self.path} holds {records} unsent records for {row[0]}, not for "
                f"{destination}; send them first with a producer for {row[0]}, or give this "
                "producer another spool_path"
            )
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('destination', ?)", (destination,)
        )

    # --- context management -----------------------------------------------------------------
    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and release ownership; idempotent."""
        with self._lock:
            if self._lock_file.closed:
                return
            if hasattr(self, "_db"):
                self._db.close()
            self._lock_file.close()

    # --- reading ----------------------------------------------------------------------------
    def stats(self) -> SpoolStats:
        return SpoolStats(records=self._records, bytes=self._bytes, max_bytes=self.max_bytes)

    def __len__(self) -> int:
        return self._records

    @property
    def free_bytes(self) -> int:
        return self.max_bytes - self._bytes

    def counts_by_key(self) -> dict[str, int]:
        """How many records wait per partition key."""
        with self._lock:
            rows = self._db.execute(
                "SELECT partition_key, COUNT(*) FROM spool GROUP BY partition_key"
            ).fetchall()
        return {key: count for key, count in rows}

    def heads(self, keys: Iterable[str]) -> list[SpooledRecord]:
        """The oldest record of each given key (keys with nothing spooled are skipped), by id."""
        heads: list[SpooledRecord] = []
        with self._lock:
            for key in keys:
                row = self._db.execute(
                    "SELECT id, partition_key, data, accepted_at FROM spool"
                    " WHERE partition_key = ? ORDER BY id LIMIT 1",
                    (key,),
                ).fetchone()
                if row is not None:
                    heads.append(_spooled(row))
        heads.sort(key=lambda record: record.id)
        return heads

    def records(self) -> list[SpooledRecord]:
        """Everything spooled, oldest first (for inspection; the producer reads heads)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, partition_key, data, accepted_at FROM spool ORDER BY id"
            ).fetchall()
        return [_spooled(row) for row in rows]

    # --- writing ----------------------------------------------------------------------------
    def append(self, entries: Sequence[SpoolEntry]) -> list[int]:
        """Store all entries in one transaction and return their ids, or raise SpoolFullError."""
        size = sum(entry.size for entry in entries)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise SpoolFullError(
                    f"the spool {self.path} is full: it holds {self._bytes} of {self.max_bytes} "
                    f"bytes and {len(entries)} more records need {size}. Nothing was discarded; "
                    "new records are refused until Kinesis acknowledges the backlog "
                    "(check the network and the stream, or raise max_spool_bytes)"
                )
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    ids = [
                        self._db.execute(
                            "INSERT INTO spool (partition_key, data, accepted_at)"
                            " VALUES (?, ?, ?)",
                            (entry.partition_key, entry.data, entry.accepted_at),
                        ).lastrowid
                        for entry in entries
                    ]
            except sqlite3.Error as exc:
                raise ProducerError(f"cannot write to the spool {self.path}: {exc}") from exc
            self._records += len(entries)
            self._bytes += size
        return [int(record_id) for record_id in ids if record_id is not None]

    def remove(self, records: Sequence[SpooledRecord]) -> None:
        """Forget records Kinesis acknowledged."""
        if not records:
            return
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    deleted = self._db.executemany(
                        "DELETE FROM spool WHERE id = ?", [(record.id,) for record in records]
                    ).rowcount
            except sqlite3.Error as exc:
                raise ProducerError(f"cannot update the spool {self.path}: {exc}") from exc
            if deleted != len(records):
                raise ProducerError(
                    f"the spool {self.path} lost track of {len(records) - deleted} records; "
                    "is another process editing it?"
                )
            self._records -= len(records)
            self._bytes -= sum(record.size for record in records)


def _spooled(row: tuple[int, str, bytes, float]) -> SpooledRecord:
    record_id, key, data, accepted_at = row
    return SpooledRecord(partition_key=key, data=bytes(data), accepted_at=accepted_at, id=record_id)


def _acquire_owner_lock(path: Path) -> TextIO:
    """Hold ``<path>.lock`` exclusively for as long as the spool is open."""
    lock_path = path.with_name(path.name + ".lock")
    handle = open(lock_path, "a+")  # kept open: closing it releases the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise ProducerError(
            f"the spool {path} is in use by another producer (pid {owner}); stop it first or "
            "give this producer its own spool_path"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
