"""The catalog's schema (ordered migrations, applied by `PRAGMA user_version`) and SQL helpers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

# The lexical index of text read in photos (OCR): SQLite FTS5 with the trigram tokenizer, so any
# sub-string of 3+ characters is found through the index (MATCH, and LIKE '%...%'), with rowid =
# the detection's id. Case and accents are folded by pixquery before text goes in and before a
# query is matched (catalog/text.py `fold`), not by the tokenizer's `remove_diacritics`, which
# needs SQLite >= 3.45: so the table reads the same on every SQLite that has trigram (>= 3.34),
# and a library moved to another machine still opens. Without trigram, a plain table is scanned
# with LIKE instead (same answers, slower). A trigger keeps it in step with `detection`, whatever
# deletes the row (a photo purged, text read again).
HAS_TRIGRAM = sqlite3.sqlite_version_info >= (3, 34, 0)
TEXT_INDEX_SQL = (
    (
        """
    CREATE VIRTUAL TABLE text_index USING fts5(text, tokenize = 'trigram');
    """
        if HAS_TRIGRAM
        else """
    CREATE TABLE text_index (rowid INTEGER PRIMARY KEY, text TEXT NOT NULL);
    """
    )
    + """
    CREATE TRIGGER text_index_forget AFTER DELETE ON detection WHEN old.kind = 'text'
    BEGIN
        DELETE FROM text_index WHERE rowid = old.id;
    END;
"""
)

# Each entry migrates from version i to i+1. Never edit a released entry: append a new one.
MIGRATIONS: list[str] = [
    # 0 -> 1: the study's schema (Appendix 1) plus change detection and per-model embeddings.
    """
    CREATE TABLE folder (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        added_at REAL NOT NULL
    );
    CREATE TABLE image (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT,
        width INTEGER,
        height INTEGER,
        indexed_at REAL NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE video (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT,
        width INTEGER,
        height INTEGER,
        duration REAL,
        fps REAL,
        frame_count INTEGER,
        indexed_at REAL NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    -- A region of a photo or a (region of a) video frame. Boxes are relative (0..1) x0,y0,x1,y1.
    CREATE TABLE detection (
        id INTEGER PRIMARY KEY,
        image_id INTEGER REFERENCES image(id) ON DELETE CASCADE,
        video_id INTEGER REFERENCES video(id) ON DELETE CASCADE,
        timestamp REAL,
        x0 REAL NOT NULL DEFAULT 0, y0 REAL NOT NULL DEFAULT 0,
        x1 REAL NOT NULL DEFAULT 1, y1 REAL NOT NULL DEFAULT 1,
        kind TEXT NOT NULL DEFAULT 'frame',
        label TEXT,
        CHECK ((image_id IS NULL) <> (video_id IS NULL))
    );
    CREATE INDEX detection_image ON detection(image_id);
    CREATE INDEX detection_video ON detection(video_id);
    CREATE TABLE model (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        fingerprint TEXT NOT NULL UNIQUE,
        dim INTEGER NOT NULL,
        threshold REAL,            -- best angular-distance threshold from `pixquery eval`
        threshold_metric TEXT,
        threshold_source TEXT
    );
    CREATE TABLE embedding (
        model_id INTEGER NOT NULL REFERENCES model(id) ON DELETE CASCADE,
        image_id INTEGER REFERENCES image(id) ON DELETE CASCADE,
        detection_id INTEGER REFERENCES detection(id) ON DELETE CASCADE,
        vector BLOB NOT NULL,      -- float32, L2-normalised
        CHECK ((image_id IS NULL) <> (detection_id IS NULL))
    );
    CREATE UNIQUE INDEX embedding_image ON embedding(model_id, image_id) WHERE image_id IS NOT NULL;
    CREATE UNIQUE INDEX embedding_detection ON embedding(model_id, detection_id) WHERE detection_id IS NOT NULL;
    CREATE TABLE "index" (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES model(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        path TEXT,                 -- relative to the library folder, NULL until first written
        built_at REAL,
        build_seconds REAL,
        size_bytes INTEGER,
        recall REAL,
        next_ref_id INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE index_image (
        index_id INTEGER NOT NULL REFERENCES "index"(id) ON DELETE CASCADE,
        index_ref_id INTEGER NOT NULL,
        image_id INTEGER REFERENCES image(id),
        detection_id INTEGER REFERENCES detection(id),
        stale INTEGER NOT NULL DEFAULT 0,  -- its embedding changed since it was added: re-add
        PRIMARY KEY (index_id, index_ref_id),
        CHECK ((image_id IS NULL) <> (detection_id IS NULL))
    );
    CREATE INDEX index_image_image ON index_image(image_id);
    CREATE INDEX index_image_detection ON index_image(detection_id);
    CREATE TABLE setting (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 1 -> 2: look embeddings up by their item alone. SQLite's ON DELETE CASCADE finds child rows
    # by the child column only, so without these, deleting one detection or photo scanned the
    # whole embedding table (500 detections x 200,000 embeddings: 18 s; with them 0.01 s).
    """
    CREATE INDEX embedding_by_image ON embedding(image_id) WHERE image_id IS NOT NULL;
    CREATE INDEX embedding_by_detection ON embedding(detection_id) WHERE detection_id IS NOT NULL;
    """,
    # 2 -> 3: each photo embedding records the file version (size, mtime, sha256) it was made from.
    # Change detection compared the disk with the `image` row only, which the *last* model to index
    # a file updates: a file changed and re-indexed with model B looked unchanged to model A, which
    # kept the old photo's vector. Now a model re-embeds every photo whose embedding is not of the
    # file's current version. Rows from before: a library with one model wrote each embedding
    # together with its image row, so they are of that version; where several models share a
    # library that cannot be known, so they stay NULL (unknown) and are re-embedded once.
    """
    ALTER TABLE embedding ADD COLUMN source_size INTEGER;
    ALTER TABLE embedding ADD COLUMN source_mtime_ns INTEGER;
    ALTER TABLE embedding ADD COLUMN source_sha256 TEXT;
    UPDATE embedding SET
        source_size = (SELECT size FROM image WHERE image.id = embedding.image_id),
        source_mtime_ns = (SELECT mtime_ns FROM image WHERE image.id = embedding.image_id),
        source_sha256 = (SELECT sha256 FROM image WHERE image.id = embedding.image_id)
    WHERE image_id IS NOT NULL
      AND (SELECT COUNT(DISTINCT model_id) FROM embedding WHERE image_id IS NOT NULL) = 1;
    """,
    # 3 -> 4: files that failed, as they were when they failed, so that a file that stays broken is
    # reported on every run but only a new failure makes `pixquery index` exit 1 (cron stays quiet).
    """
    CREATE TABLE failure (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,      -- -1 when the path could not be stat()ed
        mtime_ns INTEGER NOT NULL,
        reason TEXT NOT NULL,
        first_seen REAL NOT NULL
    );
    """,
    # 4 -> 5: store-only libraries (`pixquery import --store-only`): the vectors and their paths live
    # only in a Milvus collection, with no image row each. The catalog keeps which embed runs' shard
    # folders were loaded (each gets a number: the high bits of its vectors' ids) and which of their
    # shards the collection holds, so a killed import resumes and a re-run skips loaded shards.
    """
    CREATE TABLE shard_source (
        id INTEGER PRIMARY KEY,       -- the high bits of the ids of its vectors
        key TEXT NOT NULL UNIQUE,     -- the embed run: its manifest's source and creation time
        uri TEXT NOT NULL,            -- the folder it was last imported from
        fingerprint TEXT NOT NULL,    -- the model the shards were made with
        added_at REAL NOT NULL
    );
    CREATE TABLE shard_loaded (
        source_id INTEGER NOT NULL REFERENCES shard_source(id) ON DELETE CASCADE,
        partition INTEGER NOT NULL,
        vectors INTEGER NOT NULL,     -- rows with an embedding, now in the collection
        failed INTEGER NOT NULL,      -- rows the embed run could not use (no embedding)
        loaded_at REAL NOT NULL,
        PRIMARY KEY (source_id, partition)
    );
    """,
    # 5 -> 6: text in photos (OCR, `pixquery index --ocr`). Each line of text found is a detection
    # of kind 'text' (label: the text as read, score: the recogniser's confidence); `ocr_scan`
    # records which file version each photo was read from (photos with no text included), so only
    # new or changed photos are read again. The lexical index is `TEXT_INDEX_SQL` (see there).
    """
    ALTER TABLE detection ADD COLUMN score REAL;
    CREATE INDEX detection_text ON detection(image_id) WHERE kind = 'text';
    CREATE TABLE ocr_scan (
        image_id INTEGER PRIMARY KEY REFERENCES image(id) ON DELETE CASCADE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        config TEXT NOT NULL,        -- the OCR settings it was read with (ingest/ocr.py OcrConfig)
        lines INTEGER NOT NULL,
        seconds REAL NOT NULL,
        scanned_at REAL NOT NULL
    );
    """
    + TEXT_INDEX_SQL,
    # 6 -> 7: each folder's `pixquery index --exclude` globs (a JSON list), applied on every rescan of it.
    """
    ALTER TABLE folder ADD COLUMN exclude TEXT NOT NULL DEFAULT '[]';
    """,
    # 7 -> 8: what a file says about itself (ingest/metadata.py): when it was taken (wall-clock seconds
    # where it was taken, see there), from where the date came, GPS position and camera, one row
    # per photo or video. A table of its own, not columns of `image`/`video`: rows there are read
    # with SELECT *, and a library indexed before has no row until its next rescan fills it in
    # (headers only, nothing re-embedded).
    """
    CREATE TABLE media_meta (
        image_id INTEGER UNIQUE REFERENCES image(id) ON DELETE CASCADE,
        video_id INTEGER UNIQUE REFERENCES video(id) ON DELETE CASCADE,
        taken REAL,                  -- wall-clock seconds (local time where taken, counted as UTC)
        utc_offset INTEGER,          -- minutes east of UTC, when known
        taken_source TEXT NOT NULL,  -- exif | quicktime | mtime
        lat REAL,
        lon REAL,
        make TEXT,
        model TEXT,
        CHECK ((image_id IS NULL) <> (video_id IS NULL))
    );
    CREATE INDEX media_meta_taken ON media_meta(taken);
    """,
    # 8 -> 9: text in video frames (OCR). A line of text read in a video is a detection of kind
    # 'text' with video_id, shown from `timestamp` to `timestamp_end` (seconds: the first and last
    # sampled frame of the run of frames it stays on, ingest/video_text.py): one row per run, not
    # per frame, so a logo on screen for an hour is one row. `ocr_video_scan` records which file
    # version of each video was read with which OCR settings, as `ocr_scan` does for photos.
    """
    ALTER TABLE detection ADD COLUMN timestamp_end REAL;
    CREATE INDEX detection_video_text ON detection(video_id) WHERE kind = 'text';
    CREATE TABLE ocr_video_scan (
        video_id INTEGER PRIMARY KEY REFERENCES video(id) ON DELETE CASCADE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        config TEXT NOT NULL,        -- the OCR settings it was read with (ingest/ocr.py OcrConfig)
        frames INTEGER NOT NULL,     -- sampled frames read
        lines INTEGER NOT NULL,      -- text rows stored (one per line and run of frames)
        seconds REAL NOT NULL,
        scanned_at REAL NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def split_sql(script: str) -> list[str]:
    """Split a script into statements (executescript would commit our open transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    assert not current.strip(), f"incomplete SQL statement: {current!r}"
    return statements


def chunks(seq: list[T], n: int = 900) -> Iterator[list[T]]:
    """Pieces of at most n: SQLite limits how many `?` one statement may bind."""
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def marks(n: int) -> str:
    """'?,?,?' for an IN (...) of n values."""
    return ",".join("?" * n)
