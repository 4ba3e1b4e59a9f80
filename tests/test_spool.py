"""The on-disk spool: order, crash safety, ownership and its bound."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from hrnb.errors import ConfigError, ProducerError, SpoolFullError
from hrnb.stream.spool import Spool, SpoolEntry
from hrnb.wire.records import MAX_RECORD_BYTES


def entry(key: str, n: int, size: int = 10) -> SpoolEntry:
    return SpoolEntry(partition_key=key, data=f"{key}:{n}:".encode().ljust(size, b"."),
                      accepted_at=1000.0 + n)


def test_heads_are_the_oldest_record_of_each_key_in_acceptance_order(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.append([entry("b", 0), entry("a", 1), entry("b", 2), entry("c", 3)])
        heads = spool.heads(["a", "b", "c", "nobody"])
        assert [(h.partition_key, h.data[:4]) for h in heads] == [
            ("b", b"b:0:"), ("a", b"a:1:"), ("c", b"c:3:")
        ]
        spool.remove([heads[0]])
        assert [h.data[:4] for h in spool.heads(["b"])] == [b"b:2:"]
        assert spool.counts_by_key() == {"a": 1, "b": 1, "c": 1}
        assert len(spool) == 3


def test_records_survive_reopening_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        ids = spool.append([entry("a", n) for n in range(5)])
        spool.remove(spool.heads(["a"]))
    with Spool(path) as spool:
        assert [r.id for r in spool.records()] == ids[1:]
        assert [r.accepted_at for r in spool.records()] == [1001.0, 1002.0, 1003.0, 1004.0]
        assert spool.stats().records == 4
        assert spool.stats().bytes == 4 * (10 + 1)
        later = spool.append([entry("a", 9)])
        assert later[0] > ids[-1]


def _append_then_die(path: str, ready: multiprocessing.synchronize.Event) -> None:
    spool = Spool(path)
    spool.append([entry("a", n) for n in range(100)])
    ready.set()
    time.sleep(60)  # waits to be killed: the test's crash


def test_a_killed_process_loses_nothing_it_appended_and_releases_the_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_append_then_die, args=(str(path), ready))
    child.start()
    try:
        assert ready.wait(30)
        with pytest.raises(ProducerError, match=f"in use by another producer \\(pid {child.pid}"):
            Spool(path)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    with Spool(path) as spool:
        assert [r.data[:5] for r in spool.records()][:2] == [b"a:0:.", b"a:1:."]
        assert len(spool) == 100


def test_the_database_uses_write_ahead_logging(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_full_spool_refuses_the_whole_append_and_keeps_what_it_has(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db", max_bytes=MAX_RECORD_BYTES) as spool:
        big = SpoolEntry("a", b"x" * (MAX_RECORD_BYTES - 100), 1.0)
        spool.append([big])
        with pytest.raises(SpoolFullError, match="is full.*Nothing was discarded"):
            spool.append([entry("a", 1, size=60), entry("a", 2, size=60)])
        assert len(spool) == 1
        assert spool.free_bytes == 99
        spool.remove(spool.records())
        spool.append([entry("a", 1, size=60)])
        assert len(spool) == 1


def test_a_bound_below_one_kinesis_record_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1048576"):
        Spool(tmp_path / "spool.db", max_bytes=1000)


def test_removing_records_it_does_not_hold_is_an_error(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.append([entry("a", 0)])
        (record,) = spool.records()
        spool.remove([record])
        with pytest.raises(ProducerError, match="lost track of 1 records"):
            spool.remove([record])


def test_leftovers_only_go_to_the_destination_they_were_spooled_for(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, destination="stream 'a' at local") as spool:
        spool.append([entry("x", 0)])
    with pytest.raises(ProducerError, match="holds 1 unsent records for stream 'a' at local"):
        Spool(path, destination="stream 'b' at aws")
    with Spool(path, destination="stream 'a' at local") as spool:  # released after the refusal
        spool.remove(spool.records())
    with Spool(path, destination="stream 'b' at aws") as spool:  # empty: free to change hands
        spool.append([entry("x", 1)])
    with pytest.raises(ProducerError, match="for stream 'b' at aws"):
        Spool(path, destination="stream 'a' at local")
