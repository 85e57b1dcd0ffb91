"""What `pixquery duplicates` reads: photos sharing a content hash, and every live photo's
whole-picture embedding of one model (the near-duplicate search runs on those, in
pixquery.duplicates). The part of the Catalog that finds copies; it never deletes anything.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from pixquery.catalog.schema import chunks, marks


class DuplicateTables:
    db: sqlite3.Connection  # set by Catalog

    def content_twins(self) -> list[list[int]]:
        """Ids of live photos that share one content hash (image.sha256: the bytes decoded), one
        list per hash held by two or more photos."""
        rows = self.db.execute(
            """SELECT group_concat(id) FROM image WHERE deleted = 0 AND sha256 IS NOT NULL
               GROUP BY sha256 HAVING COUNT(*) > 1"""
        )
        return [[int(x) for x in r[0].split(",")] for r in rows]

    def photo_embeddings(self, model_id: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(image ids (n,) int64, vectors (n, dim) float32) of every live photo's whole-picture
        embedding by this model (regions and video frames are not photos of their own)."""
        count = self.db.execute(
            """SELECT COUNT(*) FROM embedding e JOIN image i ON i.id = e.image_id
               WHERE e.model_id = ? AND i.deleted = 0""",
            (model_id,),
        ).fetchone()[0]
        ids = np.empty(count, np.int64)
        vectors = np.empty((count, dim), np.float32)
        n = 0
        rows = self.db.execute(
            """SELECT e.image_id, e.vector FROM embedding e JOIN image i ON i.id = e.image_id
               WHERE e.model_id = ? AND i.deleted = 0 ORDER BY e.image_id""",
            (model_id,),
        )
        for image_id, blob in rows:
            if n == count:  # rows added since the count (an index run writing now): next time
                break
            ids[n] = image_id
            vectors[n] = np.frombuffer(blob, dtype=np.float32)
            n += 1
        return ids[:n], vectors[:n]

    def photo_vectors(self, model_id: int, image_ids: list[int]) -> dict[int, np.ndarray]:
        """image id -> this model's whole-picture embedding, for those of `image_ids` that have one."""
        out: dict[int, np.ndarray] = {}
        for chunk in chunks(list(dict.fromkeys(image_ids))):
            q = f"SELECT image_id, vector FROM embedding WHERE model_id = ? AND image_id IN ({marks(len(chunk))})"
            for image_id, blob in self.db.execute(q, (model_id, *chunk)):
                out[image_id] = np.frombuffer(blob, dtype=np.float32)
        return out
