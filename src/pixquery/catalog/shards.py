"""Shard folders loaded into a store-only library (`pixquery import --store-only`): the part of the
Catalog that ingest/store_only.py reads and writes. Such a library has no image rows: these tables
say which embed runs (shard folders) and which of their shards its Milvus collection holds.
"""

from __future__ import annotations

import sqlite3
import time


class ShardTables:
    db: sqlite3.Connection  # set by Catalog

    def shard_source(self, key: str, uri: str, fingerprint: str) -> int:
        """The number of the embed run `key` (made on its first import; its folder may have moved)."""
        row = self.db.execute("SELECT id FROM shard_source WHERE key = ?", (key,)).fetchone()
        if row:
            self.db.execute("UPDATE shard_source SET uri = ? WHERE id = ?", (uri, row[0]))
            return int(row[0])
        cur = self.db.execute(
            "INSERT INTO shard_source(key, uri, fingerprint, added_at) VALUES (?, ?, ?, ?)",
            (key, uri, fingerprint, time.time()),
        )
        assert cur.lastrowid is not None  # an INSERT sets it
        return cur.lastrowid

    def shard_sources(self) -> list[tuple[int, str, str]]:
        """(number, uri, fingerprint) of every embed run loaded (or being loaded)."""
        return [tuple(r) for r in self.db.execute("SELECT id, uri, fingerprint FROM shard_source ORDER BY id")]

    def loaded_shards(self, source_id: int) -> dict[int, tuple[int, int]]:
        """partition -> (vectors, failed) of the shards of that run the collection holds."""
        q = "SELECT partition, vectors, failed FROM shard_loaded WHERE source_id = ?"
        return {p: (v, f) for p, v, f in self.db.execute(q, (source_id,))}

    def mark_shard_loaded(self, source_id: int, partition: int, vectors: int, failed: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO shard_loaded(source_id, partition, vectors, failed, loaded_at) VALUES (?, ?, ?, ?, ?)",
            (source_id, partition, vectors, failed, time.time()),
        )

    def unmark_shard(self, source_id: int, partition: int) -> None:
        """The collection lacks some of that shard's vectors: load it again."""
        self.db.execute("DELETE FROM shard_loaded WHERE source_id = ? AND partition = ?", (source_id, partition))

    def loaded_totals(self) -> tuple[int, int, int]:
        """(shards, vectors, failed rows) over every loaded shard."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(vectors), 0), COALESCE(SUM(failed), 0) FROM shard_loaded"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])
