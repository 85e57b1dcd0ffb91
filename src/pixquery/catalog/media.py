"""Videos and detections (regions of photos, video frames and their regions): the part of the
Catalog that ingest/regions.py, ingest/video.py, search and the server read and write.

Detections are shared by all models (a box is a box), embeddings are per model. A detection an
index still refers to cannot be deleted (index_image references it), so replacing a file's
regions "retires" the old rows: their embeddings go (every index drops them at its next sync)
and the rows go in `purge_orphan_detections`, once no index refers to them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

import numpy as np

from pixquery.catalog.rows import DetectionRow, VideoRow
from pixquery.catalog.schema import chunks, marks

# "some model embedded this detection", as seeks on the (model_id, detection_id) index.
_HAS_EMBEDDING = (
    "EXISTS (SELECT 1 FROM embedding e WHERE e.model_id IN (SELECT id FROM model) AND e.detection_id = {d})"
)


class MediaTables:
    db: sqlite3.Connection  # set by Catalog

    # -- videos ---------------------------------------------------------------------------

    def videos_under(self, root: str) -> dict[str, tuple[int, int, int]]:
        """path -> (id, size, mtime_ns) of live videos below `root` (a folder) or equal to it (a file)."""
        prefix = root.rstrip("/") + "/"
        rows = self.db.execute(
            "SELECT path, id, size, mtime_ns FROM video WHERE deleted = 0 AND (path = ? OR substr(path, 1, ?) = ?)",
            (root, len(prefix), prefix),
        )
        return {p: (i, s, m) for p, i, s, m in rows}

    def upsert_video(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        *,
        width: int | None,
        height: int | None,
        duration: float | None,
        fps: float | None,
        frame_count: int | None,
    ) -> int:
        """Insert or refresh one video row (inside a transaction). Returns its id."""
        return int(
            self.db.execute(
                """INSERT INTO video(path, size, mtime_ns, sha256, width, height, duration, fps, frame_count, indexed_at, deleted)
               VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, 0)
               ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = NULL,
                 width = excluded.width, height = excluded.height, duration = excluded.duration, fps = excluded.fps,
                 frame_count = excluded.frame_count, indexed_at = excluded.indexed_at, deleted = 0
               RETURNING id""",
                (path, size, mtime_ns, width, height, duration, fps, frame_count, time.time()),
            ).fetchone()[0]
        )

    def mark_videos_deleted(self, video_ids: Iterable[int]) -> None:
        """Soft delete (inside a transaction): every index drops their frames at its next sync
        (live_items skips deleted videos); `purge_deleted_videos` removes the rows after that."""
        for chunk in chunks(list(video_ids)):
            self.db.execute(f"UPDATE video SET deleted = 1 WHERE id IN ({marks(len(chunk))})", chunk)

    def purge_deleted_videos(self) -> int:
        """Delete deleted videos that no index refers to any more (their detections and embeddings
        go with them), and retired detections. Call after the index sync. Returns videos deleted."""
        n = self.db.execute(
            """DELETE FROM video WHERE deleted = 1 AND NOT EXISTS (
                 SELECT 1 FROM detection d JOIN index_image ii ON ii.detection_id = d.id WHERE d.video_id = video.id)"""
        ).rowcount
        self.purge_orphan_detections()
        return n

    def video_ids_with_embedding(self, model_id: int) -> set[int]:
        """Videos that have at least one frame embedded with this model."""
        return {
            r[0]
            for r in self.db.execute(
                """SELECT DISTINCT d.video_id FROM detection d JOIN embedding e ON e.detection_id = d.id
                   WHERE e.model_id = ? AND d.video_id IS NOT NULL AND d.kind = 'frame'""",
                (model_id,),
            )
        }

    def video(self, video_id: int) -> VideoRow | None:
        row = self.db.execute(
            "SELECT id, path, size, mtime_ns, width, height, duration, deleted FROM video WHERE id = ?",
            (int(video_id),),
        ).fetchone()
        return VideoRow(*row) if row else None

    def live_videos(self, ids: Sequence[int]) -> dict[int, tuple[str, int | None, int | None]]:
        """video id -> (path, width, height) of those not deleted."""
        out = {}
        for chunk in chunks(list(ids)):
            q = f"SELECT id, path, width, height FROM video WHERE deleted = 0 AND id IN ({marks(len(chunk))})"
            out.update({vid: (p, w, h) for vid, p, w, h in self.db.execute(q, chunk)})
        return out

    def video_versions(self, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """video id -> (size, mtime_ns) as indexed."""
        out = {}
        for chunk in chunks(list(ids)):
            q = f"SELECT id, size, mtime_ns FROM video WHERE id IN ({marks(len(chunk))})"
            out.update({vid: (size, mtime) for vid, size, mtime in self.db.execute(q, chunk)})
        return out

    def nearest_frame_time(self, video_id: int, timestamp: float) -> float | None:
        """The stored frame time (a detection's timestamp: what search hits point at) nearest to
        `timestamp` in this video, or None when it has none."""
        row = self.db.execute(
            """SELECT timestamp FROM detection WHERE video_id = ? AND timestamp IS NOT NULL
               ORDER BY ABS(timestamp - ?), timestamp LIMIT 1""",
            (int(video_id), float(timestamp)),
        ).fetchone()
        return row[0] if row else None

    def frame_embedding_near(self, model_id: int, video_id: int, timestamp: float) -> np.ndarray | None:
        """This model's embedding of the video's whole frame nearest `timestamp` (a text hit's
        time: its cosine with the query), or None when the model has none."""
        row = self.db.execute(
            """SELECT e.vector FROM detection d JOIN embedding e ON e.detection_id = d.id AND e.model_id = ?
               WHERE d.video_id = ? AND d.kind = 'frame' ORDER BY ABS(d.timestamp - ?), d.timestamp LIMIT 1""",
            (int(model_id), int(video_id), float(timestamp)),
        ).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32)

    def count_videos(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM video WHERE deleted = 0").fetchone()[0])

    # -- detections -----------------------------------------------------------------------

    def detections(self, ids: Sequence[int]) -> dict[int, DetectionRow]:
        out = {}
        for chunk in chunks(list(ids)):
            q = f"SELECT id, image_id, video_id, timestamp, x0, y0, x1, y1 FROM detection WHERE id IN ({marks(len(chunk))})"
            for did, img, vid, ts, x0, y0, x1, y1 in self.db.execute(q, chunk):
                out[did] = DetectionRow(did, img, vid, ts, (x0, y0, x1, y1))
        return out

    def embedded_detections_of(
        self, *, image_id: int | None = None, video_id: int | None = None, kinds: Sequence[str]
    ) -> list[tuple[int, str, float | None, tuple[float, float, float, float], str | None]]:
        """(id, kind, timestamp, box, label) of this photo's or video's detections of `kinds` that
        some model has an embedding of (retired ones have none)."""
        col, owner = ("image_id", image_id) if image_id is not None else ("video_id", video_id)
        q = f"""SELECT id, kind, timestamp, x0, y0, x1, y1, label FROM detection d
                WHERE {col} = ? AND kind IN ({marks(len(kinds))}) AND {_HAS_EMBEDDING.format(d="d.id")}"""
        return [
            (did, kind, ts, (x0, y0, x1, y1), label)
            for did, kind, ts, x0, y0, x1, y1, label in self.db.execute(q, (owner, *kinds))
        ]

    def add_detection(
        self,
        *,
        image_id: int | None = None,
        video_id: int | None = None,
        kind: str,
        box: tuple[float, float, float, float],
        timestamp: float | None = None,
        label: str | None = None,
    ) -> int:
        x0, y0, x1, y1 = box
        return int(
            self.db.execute(
                """INSERT INTO detection(image_id, video_id, timestamp, x0, y0, x1, y1, kind, label)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (image_id, video_id, timestamp, x0, y0, x1, y1, kind, label),
            ).fetchone()[0]
        )

    def put_detection_embedding(self, model_id: int, detection_id: int, vector: np.ndarray) -> None:
        self.db.execute(
            """INSERT INTO embedding(model_id, detection_id, vector) VALUES (?, ?, ?)
               ON CONFLICT(model_id, detection_id) WHERE detection_id IS NOT NULL DO UPDATE SET vector = excluded.vector""",
            (model_id, detection_id, np.asarray(vector, dtype=np.float32).tobytes()),
        )

    def detection_ids_with_embedding(self, model_id: int, ids: Sequence[int]) -> set[int]:
        out: set[int] = set()
        for chunk in chunks(list(ids)):
            q = f"SELECT detection_id FROM embedding WHERE model_id = ? AND detection_id IN ({marks(len(chunk))})"
            out.update(r[0] for r in self.db.execute(q, (model_id, *chunk)))
        return out

    def retire_detections(self, detection_ids: Sequence[int]) -> None:
        """Detections that no longer exist: drop every model's embedding of them (so every index
        drops them at its next sync) and delete the rows no index refers to; the rest go in
        `purge_orphan_detections` after the sync. Call inside a transaction."""
        for chunk in chunks(list(detection_ids)):
            m = marks(len(chunk))
            self.db.execute(
                f"DELETE FROM embedding WHERE model_id IN (SELECT id FROM model) AND detection_id IN ({m})", chunk
            )
            self.db.execute(
                f"""DELETE FROM detection WHERE id IN ({m})
                    AND id NOT IN (SELECT detection_id FROM index_image WHERE detection_id IS NOT NULL)""",
                chunk,
            )

    def purge_orphan_detections(self) -> int:
        """Delete retired detections (no embedding left) that no index refers to any more."""
        return self.db.execute(
            f"""DELETE FROM detection WHERE kind != 'text' AND NOT {_HAS_EMBEDDING.format(d="detection.id")}
                AND NOT EXISTS (SELECT 1 FROM index_image ii WHERE ii.detection_id = detection.id)"""
        ).rowcount

    # Text read in photos (kind 'text', catalog/text.py) is not a region: it has no embedding, and
    # region settings changing or a photo changing leaves it to the OCR pass (which rereads it).

    def photo_detection_ids(self, image_ids: Sequence[int] | None = None) -> list[int]:
        """Ids of the region detections of these photos (of every photo when None)."""
        if image_ids is None:
            return [
                r[0] for r in self.db.execute("SELECT id FROM detection WHERE image_id IS NOT NULL AND kind != 'text'")
            ]
        ids: list[int] = []
        for chunk in chunks(list(image_ids)):
            q = f"SELECT id FROM detection WHERE image_id IN ({marks(len(chunk))}) AND kind != 'text'"
            ids += [r[0] for r in self.db.execute(q, chunk)]
        return ids

    def count_photos_with_detections(self) -> int:
        return int(
            self.db.execute(
                "SELECT COUNT(DISTINCT image_id) FROM detection WHERE image_id IS NOT NULL AND kind != 'text'"
            ).fetchone()[0]
        )

    def count_detections(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM detection WHERE kind != 'text'").fetchone()[0])

    def photos_without_detections(self, model_id: int, kinds: Sequence[str]) -> list[tuple[int, str]]:
        """(image id, path) of live photos with no detection of `kinds` embedded by this model."""
        done = {
            r[0]
            for r in self.db.execute(
                f"""SELECT DISTINCT d.image_id FROM embedding e JOIN detection d ON d.id = e.detection_id
                    WHERE e.model_id = ? AND d.image_id IS NOT NULL AND d.kind IN ({marks(len(kinds))})""",
                (model_id, *kinds),
            )
        }
        rows = self.db.execute("SELECT id, path FROM image WHERE deleted = 0 ORDER BY path")
        return [(i, p) for i, p in rows if i not in done]
