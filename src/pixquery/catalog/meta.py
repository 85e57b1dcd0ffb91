"""What files say about themselves (`media_meta`: date taken, GPS, camera) and the search filters
over it: the part of the Catalog that ingest/metadata.py writes and pixquery.filters reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pixquery.filters import Filter

from pixquery.catalog.schema import chunks, marks

META_COLUMNS = ("taken", "utc_offset", "taken_source", "lat", "lon", "make", "model")


class MetaTables:
    db: sqlite3.Connection  # set by Catalog

    def put_meta(self, meta: dict[str, Any], *, image_id: int | None = None, video_id: int | None = None) -> None:
        """Store (replace) a photo's or video's metadata (call inside a transaction)."""
        col, owner = ("image_id", image_id) if image_id is not None else ("video_id", video_id)
        values = [meta.get(c) for c in META_COLUMNS]
        self.db.execute(
            f"""INSERT INTO media_meta({col}, {", ".join(META_COLUMNS)}) VALUES (?, {marks(len(META_COLUMNS))})
                ON CONFLICT({col}) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in META_COLUMNS)}""",
            (owner, *values),
        )

    def images_without_meta(self) -> list[tuple[int, str, int]]:
        """(id, path, mtime_ns) of live photos with no metadata row (indexed before it was read)."""
        return list(
            self.db.execute(
                """SELECT i.id, i.path, i.mtime_ns FROM image i LEFT JOIN media_meta m ON m.image_id = i.id
               WHERE i.deleted = 0 AND m.image_id IS NULL ORDER BY i.path"""
            )
        )

    def videos_without_meta(self) -> list[tuple[int, str, int]]:
        return list(
            self.db.execute(
                """SELECT v.id, v.path, v.mtime_ns FROM video v LEFT JOIN media_meta m ON m.video_id = v.id
               WHERE v.deleted = 0 AND m.video_id IS NULL ORDER BY v.path"""
            )
        )

    def mark_stale_for_meta(self, image_ids: Sequence[int], video_ids: Sequence[int]) -> None:
        """Index entries of these photos and videos (their regions and frames too) must be added
        again at the next sync: an index that keeps the date beside each vector (Milvus) has an
        old one (call inside a transaction)."""
        for col, ids in (("image_id", list(image_ids)), ("video_id", list(video_ids))):
            for chunk in chunks(ids):
                m = marks(len(chunk))
                if col == "image_id":
                    self.db.execute(f"UPDATE index_image SET stale = 1 WHERE image_id IN ({m})", chunk)
                self.db.execute(
                    f"""UPDATE index_image SET stale = 1 WHERE detection_id IN
                                    (SELECT id FROM detection WHERE {col} IN ({m}))""",
                    chunk,
                )

    def count_without_meta(self) -> int:
        return int(
            self.db.execute(
                """SELECT (SELECT COUNT(*) FROM image i WHERE i.deleted = 0
                         AND NOT EXISTS (SELECT 1 FROM media_meta m WHERE m.image_id = i.id))
                    + (SELECT COUNT(*) FROM video v WHERE v.deleted = 0
                         AND NOT EXISTS (SELECT 1 FROM media_meta m WHERE m.video_id = v.id))"""
            ).fetchone()[0]
        )

    def meta_of(
        self, image_ids: Sequence[int] = (), video_ids: Sequence[int] = ()
    ) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        """({image id: meta}, {video id: meta}) for those that have a row."""
        out: tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]] = ({}, {})
        for n, (col, ids) in enumerate((("image_id", image_ids), ("video_id", video_ids))):
            for chunk in chunks(list(ids)):
                q = f"SELECT {col}, {', '.join(META_COLUMNS)} FROM media_meta WHERE {col} IN ({marks(len(chunk))})"
                for owner, *values in self.db.execute(q, chunk):
                    out[n][owner] = dict(zip(META_COLUMNS, values))
        return out

    def taken_of_items(self, items: Sequence[tuple[int | None, int | None]]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Wall-clock seconds taken (0 unknown) of (image_id, detection_id) items, in order: the
        `taken` field an index keeps beside each vector (indexes/milvus.py)."""
        taken = np.zeros(len(items), np.int64)
        img_pos: dict[int, list[int]] = {}
        det_pos: dict[int, list[int]] = {}
        for n, (img, det) in enumerate(items):
            if img is not None:
                img_pos.setdefault(img, []).append(n)
            elif det is not None:
                det_pos.setdefault(det, []).append(n)
        for chunk in chunks(list(img_pos)):
            q = f"SELECT image_id, taken FROM media_meta WHERE taken IS NOT NULL AND image_id IN ({marks(len(chunk))})"
            for image_id, t in self.db.execute(q, chunk):
                taken[img_pos[image_id]] = int(t)
        for chunk in chunks(list(det_pos)):
            q = f"""SELECT d.id, m.taken FROM detection d JOIN media_meta m
                      ON (m.image_id = d.image_id OR m.video_id = d.video_id)
                    WHERE m.taken IS NOT NULL AND d.id IN ({marks(len(chunk))})"""
            for det_id, t in self.db.execute(q, chunk):
                taken[det_pos[det_id]] = int(t)
        return taken

    def filter_refs(self, index_id: int, flt: Filter) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The index ids (index_ref_id, sorted int64) of this index whose photo, region or video
        frame passes `flt` (a pixquery.filters.Filter). One query, a UNION of whole photos, photo
        regions and video frames, each with inner joins only, so that SQLite can start from the
        selective side: the `taken` index for a date range, the path index for a folder (a range
        of paths, never substr()), the index's own rows otherwise. The distance to `near` is
        refined in numpy on the bounding box's survivors."""
        parts: list[str] = []
        args: list[Any] = []
        if flt.media != "video":
            parts.append(self._filter_part("image", None, flt, args, index_id))
            parts.append(self._filter_part("image", "d.image_id = f.id", flt, args, index_id))
        if flt.media != "photo":
            parts.append(self._filter_part("video", "d.video_id = f.id", flt, args, index_id))
        geo = flt.near is not None
        rows = self.db.execute(" UNION ALL ".join(parts), args).fetchall()
        if not rows:
            return np.empty(0, np.int64)
        if geo:
            arr = np.asarray(rows, dtype=np.float64)
            refs: np.ndarray[Any, np.dtype[np.int64]] = arr[flt.close_enough(arr[:, 1], arr[:, 2]), 0].astype(np.int64)
        else:
            refs = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        refs.sort()
        return refs

    def image_ids_passing(self, image_ids: Sequence[int], flt: Filter) -> set[int]:
        """Those of these photos that pass `flt` (the text side of a search: photos found by the
        text read in them, pixquery.text_search)."""
        return self._ids_passing("image", image_ids, flt)

    def video_ids_passing(self, video_ids: Sequence[int], flt: Filter) -> set[int]:
        """Those of these videos that pass `flt` (videos found by the text read in their frames)."""
        return self._ids_passing("video", video_ids, flt)

    def _ids_passing(self, table: str, ids: Sequence[int], flt: Filter) -> set[int]:
        out: set[int] = set()
        if flt.media == ("video" if table == "image" else "photo"):
            return out
        for chunk in chunks(list(ids), 500):
            conds, args, cols, needs_meta = _conditions(table, flt)
            source = f"{table} f JOIN media_meta m ON m.{table}_id = f.id" if needs_meta else f"{table} f"
            q = f"SELECT {cols.replace('ii.index_ref_id', 'f.id')} FROM {source} WHERE f.id IN ({marks(len(chunk))}) AND {' AND '.join(conds)}"
            rows = self.db.execute(q, [*chunk, *args]).fetchall()
            if flt.near is not None:
                rows = [r for r in rows if bool(flt.close_enough(np.array([r[1]]), np.array([r[2]]))[0])]
            out.update(int(r[0]) for r in rows)
        return out

    @staticmethod
    def _filter_part(table: str, detection_of: str | None, flt: Filter, args: list[Any], index_id: int) -> str:
        """One SELECT of filter_refs: the index entries of `table` rows (f) passing flt: the whole
        photos (detection_of None) or their detections (regions, video frames). Its tables are
        joined in a set order (CROSS JOIN: SQLite's join-order hint) starting from the selective
        side: media_meta by its `taken` index for a date range, the file's path index for folders;
        else the index's own rows."""
        conds, cond_args, cols, needs_meta = _conditions(table, flt)
        tables = {"f": f"{table} f"}
        if detection_of:
            tables["d"] = "detection d"
            conds.append(detection_of)
            conds.append("ii.detection_id = d.id")
        else:
            conds.append("ii.image_id = f.id")
        conds.append(f"ii.index_id = {int(index_id)}")
        tables["ii"] = "index_image ii"
        if needs_meta:
            tables["m"] = "media_meta m"
            conds.append(f"m.{table}_id = f.id")
        args += cond_args
        if flt.after is not None or flt.before is not None:
            order = ["m", "f", "d", "ii"]
        elif flt.folders:
            order = ["f", "d", "m", "ii"]
        else:
            return f"SELECT {cols} FROM {', '.join(tables.values())} WHERE {' AND '.join(conds)}"
        joined = " CROSS JOIN ".join(tables[a] for a in order if a in tables)
        return f"SELECT {cols} FROM {joined} WHERE {' AND '.join(conds)}"


def _conditions(table: str, flt: Filter) -> tuple[list[str], list[Any], str, bool]:
    """The WHERE conditions of `flt` on a photo or video row `f` (and its media_meta row `m`):
    (conditions, their arguments, the columns to select, whether `m` is needed)."""
    conds = ["f.deleted = 0"]
    args: list[Any] = []
    if flt.folders:
        ors = []
        for folder in flt.folders:
            prefix = folder.rstrip("/") + "/"
            ors.append("f.path = ? OR (f.path >= ? AND f.path < ?)")  # '0' follows '/': every path below
            args += [folder.rstrip("/") or "/", prefix, prefix[:-1] + "0"]
        conds.append("(" + " OR ".join(f"({o})" for o in ors) + ")")
    cols = "ii.index_ref_id"
    if flt.needs_meta:
        if flt.after is not None:
            conds.append("m.taken >= ?")
            args.append(_wall(flt.after))
        if flt.before is not None:
            conds.append("m.taken < ?")
            args.append(_wall(flt.before))
        if flt.camera:
            escaped = flt.camera.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append("(COALESCE(m.make, '') || ' ' || COALESCE(m.model, '')) LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        box = flt.bounding_box()
        if box is not None:
            conds.append("m.lat BETWEEN ? AND ? AND m.lon BETWEEN ? AND ?")
            args += list(box)
            cols += ", m.lat, m.lon"
    return conds, args, cols, flt.needs_meta


def _wall(dt: datetime) -> float:
    from pixquery.ingest.metadata import wall_seconds

    return wall_seconds(dt)
