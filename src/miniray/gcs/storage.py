"""The GCS's durable tables: one sqlite3 file in the session directory.

Why sqlite3 (WAL) rather than an append-only log of our own: it is in the
standard library, crash-safe, compacts itself (checkpoints) and lets a
restarted GCS read a table with one query; an append-only log would need
its own framing, snapshots and compaction to be as good.

Writes are buffered and committed together (group commit): ``put`` and
``delete`` only record the change and schedule a flush on the event loop;
every change made during one loop turn goes into one transaction.
``synchronous=NORMAL`` in WAL mode makes a commit an append to the WAL,
not an fsync: a committed change survives the GCS process being killed
(the case we protect against), though not the machine losing power. The
servicer awaits ``sync()`` before it replies, so nothing a caller was told
is lost if the GCS dies the next instant.

Tables hold bytes (serialized protobuf rows) under bytes keys.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3

from miniray.common import paths

TABLES = ("nodes", "jobs", "actors", "placement_groups", "functions", "kv", "meta")


class GcsStorage:
    def __init__(self, path: str | None):
        """``path`` None: an in-memory database (tests; nothing survives)."""
        self.path = path
        if path is not None and not os.path.exists(path):
            # Private from the first byte: the tables hold pickled code.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW,
                             paths.PRIVATE_FILE_MODE))
        self._db = sqlite3.connect(path or ":memory:", isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rows (tbl TEXT NOT NULL, "
                         "key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (tbl, key))")
        self._pending: dict[tuple[str, bytes], bytes | None] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._flushed: asyncio.Future | None = None
        self.commits = 0

    # --- writing --------------------------------------------------------------------
    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._pending[(table, bytes(key))] = value
        self._schedule()

    def delete(self, table: str, key: bytes) -> None:
        self._pending[(table, bytes(key))] = None
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:              # no loop (tests, shutdown): at once
            self.flush()
            return
        self._flushed = loop.create_future()
        self._flush_handle = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit every buffered change in one transaction."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, {}
        flushed, self._flushed = self._flushed, None
        if pending:
            puts = [(t, k, v) for (t, k), v in pending.items() if v is not None]
            deletes = [(t, k) for (t, k), v in pending.items() if v is None]
            with self._db:                # one transaction
                self._db.execute("BEGIN")
                if puts:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO rows (tbl, key, value) VALUES (?, ?, ?)",
                        puts)
                if deletes:
                    self._db.executemany("DELETE FROM rows WHERE tbl = ? AND key = ?",
                                         deletes)
            self.commits += 1
        if flushed is not None and not flushed.done():
            flushed.set_result(None)

    async def sync(self) -> None:
        """Return once every change made so far is committed."""
        if self._flushed is not None:
            await asyncio.shield(self._flushed)

    # --- reading ------------------------------------------------------------------------
    def load(self, table: str) -> dict[bytes, bytes]:
        """Every row of ``table`` as committed (call before serving), in the
        order they were last written (a replaced row gets a new rowid)."""
        self.flush()
        return {bytes(k): bytes(v) for k, v in self._db.execute(
            "SELECT key, value FROM rows WHERE tbl = ? ORDER BY rowid", (table,))}

    def close(self) -> None:
        self.flush()
        self._db.close()
