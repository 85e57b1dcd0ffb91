"""The Catalog class: one SQLite connection, plain SQL, a method for everything a caller needs."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixquery.catalog.duplicates import DuplicateTables
from pixquery.catalog.media import MediaTables
from pixquery.catalog.meta import MetaTables
from pixquery.catalog.rows import ImageRow, IndexRow, Item, ModelRow
from pixquery.catalog.schema import MIGRATIONS, SCHEMA_VERSION, split_sql
from pixquery.catalog.schema import chunks as _chunks
from pixquery.catalog.shards import ShardTables
from pixquery.catalog.text import TextTables
from pixquery.errors import LibraryError

MEDIA_PHOTO, MEDIA_REGION, MEDIA_VIDEO = 0, 1, 2  # `media` of index_fields


class Catalog(MediaTables, ShardTables, TextTables, MetaTables, DuplicateTables):
    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise LibraryError(f"no catalog at {self.path}: index some photos first (pixquery index FOLDER)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves with `with self.transaction()`.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")  # readers (search, server) never block the indexer
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.version
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"{self.path} has schema version {version}, newer than this pixquery knows "
                f"({SCHEMA_VERSION}): upgrade pixquery"
            )
        for v in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in split_sql(MIGRATIONS[v]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {v + 1}")

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self) -> Catalog._Tx:
        """`with catalog.transaction():` all-or-nothing (BEGIN IMMEDIATE takes the write lock up front)."""
        return Catalog._Tx(self.db)

    # -- settings -------------------------------------------------------------------------

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM setting WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO setting(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- folders --------------------------------------------------------------------------

    def add_folder(self, path: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO folder(path, added_at) VALUES (?, ?)", (path, time.time()))

    def folders(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM folder ORDER BY path")]

    def folder_excludes(self) -> dict[str, list[str]]:
        """folder -> its remembered --exclude globs (folders with none are left out)."""
        rows = self.db.execute("SELECT path, exclude FROM folder ORDER BY path")
        return {p: globs for p, e in rows if (globs := json.loads(e or "[]"))}

    def set_folder_excludes(self, path: str, globs: Sequence[str]) -> None:
        """Remember `globs` for the folder `path` (added before; call inside a transaction)."""
        self.db.execute("UPDATE folder SET exclude = ? WHERE path = ?", (json.dumps(list(globs)), path))

    # -- images ---------------------------------------------------------------------------

    def images_under(self, root: str) -> dict[str, tuple[int, int, int]]:
        """path -> (id, size, mtime_ns) of live images below `root` (a folder) or equal to it (a file)."""
        prefix = root.rstrip("/") + "/"
        rows = self.db.execute(
            "SELECT path, id, size, mtime_ns FROM image WHERE deleted = 0 AND (path = ? OR substr(path, 1, ?) = ?)",
            (root, len(prefix), prefix),
        )
        return {p: (i, s, m) for p, i, s, m in rows}

    def image(self, image_id: int) -> ImageRow | None:
        row = self.db.execute("SELECT * FROM image WHERE id = ?", (image_id,)).fetchone()
        return ImageRow(*row) if row else None

    def image_by_path(self, path: str) -> ImageRow | None:
        row = self.db.execute("SELECT * FROM image WHERE path = ?", (path,)).fetchone()
        return ImageRow(*row) if row else None

    def images(self, ids: Sequence[int]) -> dict[int, ImageRow]:
        out: dict[int, ImageRow] = {}
        for chunk in _chunks(list(ids), 900):
            q = f"SELECT * FROM image WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r[0]: ImageRow(*r) for r in self.db.execute(q, chunk)})
        return out

    def upsert_image(
        self, path: str, size: int, mtime_ns: int, sha256: str | None, width: int | None, height: int | None
    ) -> int:
        """Insert or refresh one image row (call inside a transaction). Returns its id."""
        row = self.db.execute(
            """INSERT INTO image(path, size, mtime_ns, sha256, width, height, indexed_at, deleted)
               VALUES (?, ?, ?, ?, ?, ?, ?, 0)
               ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                 sha256 = excluded.sha256, width = excluded.width, height = excluded.height,
                 indexed_at = excluded.indexed_at, deleted = 0
               RETURNING id""",
            (path, size, mtime_ns, sha256, width, height, time.time()),
        ).fetchone()
        return int(row[0])

    def add_photos(
        self,
        model_id: int,
        photos: Sequence[tuple[str, int, int, str | None, int | None, int | None]],
        vectors: np.ndarray,
    ) -> list[int]:
        """Many photos at once: (path, size, mtime_ns, sha256, width, height) each, with this model's
        embedding of each (row i of `vectors`, made from that file version). The same rows as
        `upsert_image` + `put_image_embedding` one by one, in one statement per table (call inside
        a transaction). Returns the image ids, in order. For bulk loads (bench/library_1m.py makes
        a million-photo catalog with it in under a minute)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(photos):
            raise ValueError(f"{len(photos)} photos but {len(vectors)} vectors")
        now = time.time()
        self.db.executemany(
            """INSERT INTO image(path, size, mtime_ns, sha256, width, height, indexed_at, deleted)
               VALUES (?, ?, ?, ?, ?, ?, ?, 0)
               ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                 sha256 = excluded.sha256, width = excluded.width, height = excluded.height,
                 indexed_at = excluded.indexed_at, deleted = 0""",
            ((p, s, m, h, w, hh, now) for p, s, m, h, w, hh in photos),
        )
        self.db.executemany(
            """INSERT INTO embedding(model_id, image_id, vector, source_size, source_mtime_ns, source_sha256)
               SELECT ?, id, ?, size, mtime_ns, sha256 FROM image WHERE path = ?
               ON CONFLICT(model_id, image_id) WHERE image_id IS NOT NULL DO UPDATE SET vector = excluded.vector,
                 source_size = excluded.source_size, source_mtime_ns = excluded.source_mtime_ns,
                 source_sha256 = excluded.source_sha256""",
            ((model_id, v.tobytes(), p[0]) for p, v in zip(photos, vectors)),
        )
        ids: dict[str, int] = {}
        paths = [p[0] for p in photos]
        for chunk in _chunks(paths, 900):
            q = f"SELECT path, id FROM image WHERE path IN ({','.join('?' * len(chunk))})"
            ids.update(self.db.execute(q, chunk))
        return [ids[p] for p in paths]

    def mark_deleted(self, image_ids: Iterable[int]) -> None:
        """Soft delete: the row stays until every index has dropped it (see purge_deleted)."""
        ids = list(image_ids)
        for chunk in _chunks(ids, 900):
            self.db.execute(f"UPDATE image SET deleted = 1 WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def purge_deleted(self) -> int:
        """Remove deleted images that no index refers to any more (with their embeddings)."""
        cur = self.db.execute(
            """DELETE FROM image WHERE deleted = 1
               AND id NOT IN (SELECT image_id FROM index_image WHERE image_id IS NOT NULL)
               AND id NOT IN (SELECT d.image_id FROM detection d JOIN index_image ii ON ii.detection_id = d.id
                              WHERE d.image_id IS NOT NULL)"""
        )
        return cur.rowcount

    def count_images(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM image WHERE deleted = 0").fetchone()[0])

    # -- failures -------------------------------------------------------------------------

    def record_failures(self, roots: Sequence[str], failed: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remember this run's failures under `roots` (forgetting those that no longer fail) and
        return the new ones: failed now but not before with the same file version and reason.
        Call inside a transaction."""
        now = time.time()
        current: dict[str, tuple[int, int, str]] = {}
        for path, reason in failed:
            try:
                st = os.stat(path)
                current[path] = (st.st_size, st.st_mtime_ns, reason)
            except OSError:
                current[path] = (-1, -1, reason)
        new = []
        for path, (size, mtime_ns, reason) in current.items():
            row = self.db.execute("SELECT size, mtime_ns, reason FROM failure WHERE path = ?", (path,)).fetchone()
            if row != (size, mtime_ns, reason):
                new.append((path, reason))
                self.db.execute(
                    """INSERT INTO failure(path, size, mtime_ns, reason, first_seen) VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                         reason = excluded.reason, first_seen = excluded.first_seen""",
                    (path, size, mtime_ns, reason, now),
                )
        for root in roots:
            prefix = root.rstrip("/") + "/"
            gone = [
                p
                for (p,) in self.db.execute(
                    "SELECT path FROM failure WHERE path = ? OR substr(path, 1, ?) = ?", (root, len(prefix), prefix)
                )
                if p not in current
            ]
            for chunk in _chunks(gone, 900):
                self.db.execute(f"DELETE FROM failure WHERE path IN ({','.join('?' * len(chunk))})", chunk)
        return new

    # -- models and embeddings ------------------------------------------------------------

    def ensure_model(self, name: str, fingerprint: str, dim: int) -> ModelRow:
        self.db.execute(
            "INSERT INTO model(name, fingerprint, dim) VALUES (?, ?, ?) ON CONFLICT(fingerprint) DO NOTHING",
            (name, fingerprint, dim),
        )
        model = self.model_by_fingerprint(fingerprint)
        assert model is not None  # upserted just above
        return model

    def set_model_shape(self, model_id: int, name: str, dim: int) -> None:
        """Name and width of a model row made by `set_threshold` before anything was embedded."""
        self.db.execute("UPDATE model SET dim = ?, name = ? WHERE id = ?", (dim, name, model_id))

    def count_embeddings(self, model_id: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM embedding WHERE model_id = ?", (model_id,)).fetchone()[0])

    def model_by_fingerprint(self, fingerprint: str) -> ModelRow | None:
        row = self.db.execute("SELECT * FROM model WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return ModelRow(*row) if row else None

    def model(self, model_id: int) -> ModelRow | None:
        row = self.db.execute("SELECT * FROM model WHERE id = ?", (model_id,)).fetchone()
        return ModelRow(*row) if row else None

    def models(self) -> list[ModelRow]:
        return [ModelRow(*r) for r in self.db.execute("SELECT * FROM model ORDER BY id")]

    def set_threshold(
        self, model_name: str, fingerprint: str, threshold: float, metric: str = "angular", source: str = ""
    ) -> None:
        """Store the best threshold found by `pixquery eval` (angular distance: arccos(cos)/pi)."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO model(name, fingerprint, dim) VALUES (?, ?, 0) ON CONFLICT(fingerprint) DO NOTHING",
                (model_name, fingerprint),
            )
            self.db.execute(
                "UPDATE model SET threshold = ?, threshold_metric = ?, threshold_source = ? WHERE fingerprint = ?",
                (float(threshold), metric, source, fingerprint),
            )

    def get_threshold(self, model_name: str, fingerprint: str) -> float | None:
        row = self.db.execute("SELECT threshold FROM model WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return row[0] if row else None

    def put_image_embedding(
        self, model_id: int, image_id: int, vector: np.ndarray, source: tuple[int, int, str | None] | None = None
    ) -> None:
        """Store this model's embedding of a photo, made from the file version `source` = (size,
        mtime_ns, sha256); None: the version the image row records now (call after upsert_image)."""
        if source is None:
            source = self.db.execute("SELECT size, mtime_ns, sha256 FROM image WHERE id = ?", (image_id,)).fetchone()
        self.db.execute(
            """INSERT INTO embedding(model_id, image_id, vector, source_size, source_mtime_ns, source_sha256)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(model_id, image_id) WHERE image_id IS NOT NULL DO UPDATE SET vector = excluded.vector,
                 source_size = excluded.source_size, source_mtime_ns = excluded.source_mtime_ns,
                 source_sha256 = excluded.source_sha256""",
            (model_id, image_id, np.asarray(vector, dtype=np.float32).tobytes(), *source),
        )

    def image_ids_with_current_embedding(self, model_id: int) -> set[int]:
        """Photos whose embedding by this model was made from the file version the image row
        records now (size, mtime and hash): the others must be (re-)embedded by this model."""
        return {
            r[0]
            for r in self.db.execute(
                """SELECT e.image_id FROM embedding e JOIN image i ON i.id = e.image_id
                   WHERE e.model_id = ? AND e.source_size = i.size AND e.source_mtime_ns = i.mtime_ns
                     AND e.source_sha256 IS i.sha256""",
                (model_id,),
            )
        }

    def image_embedding(self, model_id: int, image_id: int) -> np.ndarray | None:
        row = self.db.execute(
            "SELECT vector FROM embedding WHERE model_id = ? AND image_id = ?", (model_id, image_id)
        ).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def live_items(self, model_id: int) -> list[tuple[int | None, int | None]]:
        """(image_id, detection_id) of every embedding of this model whose file is not deleted."""
        return self.db.execute(
            """SELECT e.image_id, e.detection_id FROM embedding e
               LEFT JOIN image i ON i.id = e.image_id
               LEFT JOIN detection d ON d.id = e.detection_id
               LEFT JOIN image di ON di.id = d.image_id
               LEFT JOIN video dv ON dv.id = d.video_id
               WHERE e.model_id = ?
                 AND (i.deleted = 0 OR di.deleted = 0 OR dv.deleted = 0)""",
            (model_id,),
        ).fetchall()

    def vectors_for(self, model_id: int, items: Sequence[tuple[int | None, int | None]], dim: int) -> np.ndarray:
        """Embeddings of these items, in order, as one (n, dim) float32 array."""
        out = np.empty((len(items), dim), dtype=np.float32)
        img_pos = {img: n for n, (img, det) in enumerate(items) if img is not None}
        det_pos = {det: n for n, (img, det) in enumerate(items) if det is not None}
        for chunk in _chunks(list(img_pos), 900):
            q = f"SELECT image_id, vector FROM embedding WHERE model_id = ? AND image_id IN ({','.join('?' * len(chunk))})"
            for image_id, blob in self.db.execute(q, (model_id, *chunk)):
                out[img_pos[image_id]] = np.frombuffer(blob, dtype=np.float32)
        for chunk in _chunks(list(det_pos), 900):
            q = f"SELECT detection_id, vector FROM embedding WHERE model_id = ? AND detection_id IN ({','.join('?' * len(chunk))})"
            for det_id, blob in self.db.execute(q, (model_id, *chunk)):
                out[det_pos[det_id]] = np.frombuffer(blob, dtype=np.float32)
        return out

    def index_fields(self, items: Sequence[tuple[int | None, int | None]]) -> dict[str, np.ndarray]:
        """The scalar fields an index may store beside each item's vector for filtered search, in
        `items` order: media (MEDIA_PHOTO / MEDIA_REGION / MEDIA_VIDEO), folder (the id of the
        deepest indexed folder holding the file, -1 if none), taken (wall-clock seconds when it was
        taken, ingest/metadata.py; the file's modification time where no metadata was read yet)."""
        n = len(items)
        media = np.zeros(n, np.int8)
        folder = np.full(n, -1, np.int64)
        taken = np.zeros(n, np.int64)
        folders = sorted(self.db.execute("SELECT id, path FROM folder"), key=lambda r: -len(r[1]))

        def folder_of(path: str) -> int:
            for fid, root in folders:
                if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                    return int(fid)
            return -1

        img_pos = {img: n for n, (img, det) in enumerate(items) if img is not None}
        det_pos = {det: n for n, (img, det) in enumerate(items) if det is not None}
        for chunk in _chunks(list(img_pos), 900):
            q = f"SELECT id, path, mtime_ns FROM image WHERE id IN ({','.join('?' * len(chunk))})"
            for image_id, path, mtime_ns in self.db.execute(q, chunk):
                pos = img_pos[image_id]
                media[pos], folder[pos], taken[pos] = MEDIA_PHOTO, folder_of(path), mtime_ns // 1_000_000_000
        for chunk in _chunks(list(det_pos), 900):
            q = f"""SELECT d.id, d.video_id IS NOT NULL, COALESCE(i.path, v.path), COALESCE(i.mtime_ns, v.mtime_ns)
                    FROM detection d LEFT JOIN image i ON i.id = d.image_id LEFT JOIN video v ON v.id = d.video_id
                    WHERE d.id IN ({",".join("?" * len(chunk))})"""
            for det_id, is_video, path, mtime_ns in self.db.execute(q, chunk):
                pos = det_pos[det_id]
                media[pos] = MEDIA_VIDEO if is_video else MEDIA_REGION
                folder[pos], taken[pos] = folder_of(path or ""), (mtime_ns or 0) // 1_000_000_000
        known = self.taken_of_items(items)
        taken = np.where(known != 0, known, taken)
        return {"media": media, "folder": folder, "taken": taken}

    # -- indexes --------------------------------------------------------------------------

    def active_index(self, model_id: int) -> IndexRow | None:
        row = self.db.execute(
            'SELECT * FROM "index" WHERE model_id = ? AND active = 1 ORDER BY id DESC', (model_id,)
        ).fetchone()
        return _index_row(row) if row else None

    def index_row(self, index_id: int) -> IndexRow | None:
        row = self.db.execute('SELECT * FROM "index" WHERE id = ?', (index_id,)).fetchone()
        return _index_row(row) if row else None

    def indexes(self) -> list[IndexRow]:
        return [_index_row(r) for r in self.db.execute('SELECT * FROM "index" ORDER BY id')]

    def create_index(self, model_id: int, kind: str, params: dict[str, Any]) -> IndexRow:
        """A new, empty index row. It becomes the active one only when `commit_index` points it at
        a written file, so searches keep using the previous index until then."""
        with self.transaction():
            index_id = self.db.execute(
                'INSERT INTO "index"(model_id, kind, params, active) VALUES (?, ?, ?, 0) RETURNING id',
                (model_id, kind, json.dumps(params, sort_keys=True)),
            ).fetchone()[0]
        row = self.index_row(index_id)
        assert row is not None  # inserted just above
        return row

    def mark_stale(self, image_ids: Sequence[int] = (), detection_ids: Sequence[int] = ()) -> None:
        """Their embeddings were replaced: every index must drop and re-add them at its next sync."""
        for col, ids in (("image_id", list(image_ids)), ("detection_id", list(detection_ids))):
            for chunk in _chunks(ids, 900):
                self.db.execute(
                    f"UPDATE index_image SET stale = 1 WHERE {col} IN ({','.join('?' * len(chunk))})", chunk
                )

    def index_items(self, index_id: int) -> dict[tuple[int | None, int | None], tuple[int, bool]]:
        """(image_id, detection_id) -> (index_ref_id, stale) for everything in this index."""
        rows = self.db.execute(
            "SELECT image_id, detection_id, index_ref_id, stale FROM index_image WHERE index_id = ?", (index_id,)
        )
        return {(i, d): (r, bool(s)) for i, d, r, s in rows}

    def commit_index(
        self,
        index_id: int,
        *,
        path: str,
        added: Sequence[tuple[int, tuple[int | None, int | None]]],
        removed_refs: Sequence[int],
        clear: bool,
        params: dict[str, Any],
        size_bytes: int,
        build_seconds: float,
        next_ref_id: int,
        recall: float | None = None,
    ) -> list[str]:
        """Point the index row at a freshly written file, update its id map and make it the
        model's active index, atomically. Returns the files of the indexes it replaced."""
        with self.transaction():
            row = self.db.execute('SELECT model_id FROM "index" WHERE id = ?', (index_id,)).fetchone()
            replaced = [
                r[0]
                for r in self.db.execute(
                    'SELECT path FROM "index" WHERE model_id = ? AND id != ? AND path IS NOT NULL', (row[0], index_id)
                )
            ]
            self.db.execute('DELETE FROM "index" WHERE model_id = ? AND id != ?', (row[0], index_id))
            if clear:
                self.db.execute("DELETE FROM index_image WHERE index_id = ?", (index_id,))
            for chunk in _chunks(list(removed_refs), 900):
                self.db.execute(
                    f"DELETE FROM index_image WHERE index_id = ? AND index_ref_id IN ({','.join('?' * len(chunk))})",
                    (index_id, *chunk),
                )
            self.db.executemany(
                "INSERT INTO index_image(index_id, index_ref_id, image_id, detection_id) VALUES (?, ?, ?, ?)",
                [(index_id, ref, img, det) for ref, (img, det) in added],
            )
            self.db.execute(
                """UPDATE "index" SET path = ?, params = ?, size_bytes = ?, build_seconds = ?, built_at = ?,
                   next_ref_id = ?, recall = COALESCE(?, recall), active = 1 WHERE id = ?""",
                (
                    path,
                    json.dumps(params, sort_keys=True),
                    size_bytes,
                    build_seconds,
                    time.time(),
                    next_ref_id,
                    recall,
                    index_id,
                ),
            )
        return replaced

    def resolve(self, index_id: int, refs: Sequence[int]) -> dict[int, Item]:
        """index_ref_id -> Item, for live (not deleted) entries only."""
        out: dict[int, Item] = {}
        refs = [int(r) for r in refs if r >= 0]
        for chunk in _chunks(refs, 900):
            q = f"""SELECT ii.index_ref_id, ii.image_id, ii.detection_id FROM index_image ii
                    LEFT JOIN image i ON i.id = ii.image_id
                    WHERE ii.index_id = ? AND ii.index_ref_id IN ({",".join("?" * len(chunk))})
                      AND (ii.image_id IS NULL OR i.deleted = 0)"""
            for ref, img, det in self.db.execute(q, (index_id, *chunk)):
                out[ref] = Item(img, det)
        return out

    def ref_for_image(self, index_id: int, image_id: int) -> int | None:
        row = self.db.execute(
            "SELECT index_ref_id FROM index_image WHERE index_id = ? AND image_id = ?", (index_id, image_id)
        ).fetchone()
        return row[0] if row else None

    def count_index_entries(self, index_id: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM index_image WHERE index_id = ?", (index_id,)).fetchone()[0])

    # -- import ---------------------------------------------------------------------------

    def image_versions_for_import(
        self, model_id: int, paths: Sequence[str]
    ) -> dict[str, tuple[int, int, int, str | None, bool]]:
        """For those of `paths` the catalog has: path -> (image id, size, mtime_ns, sha256, whether
        this model's embedding of it was made from that version). `pixquery import` skips them."""
        out: dict[str, tuple[int, int, int, str | None, bool]] = {}
        for chunk in _chunks(list(paths), 900):
            q = f"""SELECT i.path, i.id, i.size, i.mtime_ns, i.sha256,
                           e.image_id IS NOT NULL AND e.source_size = i.size AND e.source_mtime_ns = i.mtime_ns
                             AND e.source_sha256 IS i.sha256
                    FROM image i LEFT JOIN embedding e ON e.image_id = i.id AND e.model_id = ?
                    WHERE i.deleted = 0 AND i.path IN ({",".join("?" * len(chunk))})"""
            for path, image_id, size, mtime_ns, sha, current in self.db.execute(q, (model_id, *chunk)):
                out[path] = (image_id, size, mtime_ns, sha, bool(current))
        return out


def _index_row(row: Sequence[Any]) -> IndexRow:
    r = list(row)
    r[3] = json.loads(r[3] or "{}")
    return IndexRow(*r)
