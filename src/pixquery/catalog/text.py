"""Text read in photos and video frames (OCR): the `text` detections, which photo and video
versions were read, and the lexical index over them (schema.TEXT_INDEX_SQL: FTS5 trigram, so
sub-strings are found). A video's line of text is one row per run of sampled frames it stays on
(`timestamp` to `timestamp_end`), see ingest/video_text.py.

Text is stored twice: as read (detection.label, shown to the user) and folded (text_index: lower
case, accents dropped, see `fold`) for matching. A query is folded the same way, so "CAFÉ" finds
"cafe" on any SQLite. Text detections have no embedding and are never in an ANN index, so unlike
regions they are deleted outright when a photo is read again (the trigger drops their index rows).
"""

from __future__ import annotations

import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pixquery.catalog.schema import HAS_TRIGRAM, chunks, marks

TEXT = "text"  # detection.kind of a line of text read in a photo or a video
SETTING_OCR = "ocr"  # the library's OCR settings (ingest/ocr.py OcrConfig JSON; "null" or absent: off)


def fold(text: str) -> str:
    """Lower case, accents dropped, compatibility forms unified ("Ｃａｆé" -> "cafe"): what is
    matched, on both sides."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@dataclass
class TextLine:
    """A line of text in a photo or a video as stored: the detection, its photo (or video), the
    text as read, its box (relative x0, y0, x1, y1) and the recogniser's confidence; in a video,
    the first and last sampled frame (seconds) of the run of frames it stays on."""

    detection_id: int
    image_id: int | None
    text: str
    box: tuple[float, float, float, float]
    score: float | None
    video_id: int | None = None
    timestamp: float | None = None
    timestamp_end: float | None = None


def _like_pattern(needle: str) -> str:
    return "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_LINE_COLUMNS = "d.id, d.image_id, d.label, d.x0, d.y0, d.x1, d.y1, d.score, d.video_id, d.timestamp, d.timestamp_end"
# The photo or video a line belongs to, live (not deleted): the joins and condition of every search.
_LIVE_OWNER_JOIN = "LEFT JOIN image i ON i.id = d.image_id LEFT JOIN video v ON v.id = d.video_id"
_LIVE_OWNER = "COALESCE(i.deleted, v.deleted) = 0"


def _lines(rows: Iterable[tuple[Any, ...]]) -> list[TextLine]:
    return [
        TextLine(did, img, label or "", (x0, y0, x1, y1), score, vid, ts, end)
        for did, img, label, x0, y0, x1, y1, score, vid, ts, end in rows
    ]


class TextTables:
    db: sqlite3.Connection  # set by Catalog

    # -- writing (ingest/ocr.py) ----------------------------------------------------------

    def replace_photo_text(
        self,
        image_id: int,
        lines: Sequence[tuple[str, tuple[float, float, float, float], float]],
        *,
        size: int,
        mtime_ns: int,
        config: str,
        seconds: float,
    ) -> None:
        """Make this photo's text exactly `lines` ((text, box, score) each), read from the file
        version (size, mtime_ns) with OCR settings `config`. Call inside a transaction."""
        self.db.execute("DELETE FROM detection WHERE image_id = ? AND kind = ?", (image_id, TEXT))
        for text, (x0, y0, x1, y1), score in lines:
            did = self.db.execute(
                """INSERT INTO detection(image_id, x0, y0, x1, y1, kind, label, score)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (image_id, x0, y0, x1, y1, TEXT, text, score),
            ).fetchone()[0]
            self.db.execute("INSERT INTO text_index(rowid, text) VALUES (?, ?)", (did, fold(text)))
        self.db.execute(
            """INSERT INTO ocr_scan(image_id, size, mtime_ns, config, lines, seconds, scanned_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(image_id) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                   config = excluded.config, lines = excluded.lines, seconds = excluded.seconds,
                   scanned_at = excluded.scanned_at""",
            (image_id, size, mtime_ns, config, len(lines), seconds, time.time()),
        )

    def replace_video_text(
        self,
        video_id: int,
        lines: Sequence[tuple[str, tuple[float, float, float, float], float, float, float]],
        *,
        size: int,
        mtime_ns: int,
        config: str,
        frames: int,
        seconds: float,
    ) -> None:
        """Make this video's text exactly `lines` ((text, box, score, start, end) each: a line
        and the run of sampled frames it stays on, in seconds), read from `frames` frames of the
        file version (size, mtime_ns) with OCR settings `config`. Call inside a transaction."""
        self.db.execute("DELETE FROM detection WHERE video_id = ? AND kind = ?", (video_id, TEXT))
        for text, (x0, y0, x1, y1), score, start, end in lines:
            did = self.db.execute(
                """INSERT INTO detection(video_id, timestamp, timestamp_end, x0, y0, x1, y1, kind, label, score)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (video_id, start, end, x0, y0, x1, y1, TEXT, text, score),
            ).fetchone()[0]
            self.db.execute("INSERT INTO text_index(rowid, text) VALUES (?, ?)", (did, fold(text)))
        self.db.execute(
            """INSERT INTO ocr_video_scan(video_id, size, mtime_ns, config, frames, lines, seconds, scanned_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(video_id) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                   config = excluded.config, frames = excluded.frames, lines = excluded.lines,
                   seconds = excluded.seconds, scanned_at = excluded.scanned_at""",
            (video_id, size, mtime_ns, config, frames, len(lines), seconds, time.time()),
        )

    def forget_video_text(self, video_id: int) -> None:
        """A video re-indexed without its text read (it changed, and reading failed or OCR is
        off): its old text goes, and it is read again by the next OCR pass. Inside a transaction."""
        self.db.execute("DELETE FROM detection WHERE video_id = ? AND kind = ?", (video_id, TEXT))
        self.db.execute("DELETE FROM ocr_video_scan WHERE video_id = ?", (video_id,))

    def videos_to_read(self, config: str) -> list[tuple[int, str, int, int]]:
        """(video id, path, size, mtime_ns) of live videos not read yet at their current version
        with these OCR settings, by path."""
        return list(
            self.db.execute(
                """SELECT v.id, v.path, v.size, v.mtime_ns FROM video v LEFT JOIN ocr_video_scan s ON s.video_id = v.id
               WHERE v.deleted = 0 AND (s.video_id IS NULL OR s.size != v.size OR s.mtime_ns != v.mtime_ns
                                        OR s.config != ?)
               ORDER BY v.path""",
                (config,),
            )
        )

    def video_text(self, video_id: int) -> list[TextLine]:
        """A video's lines of text, by time, then top to bottom."""
        q = f"""SELECT {_LINE_COLUMNS} FROM detection d WHERE d.video_id = ? AND d.kind = ?
                ORDER BY d.timestamp, d.y0, d.x0"""
        return _lines(self.db.execute(q, (int(video_id), TEXT)))

    def photos_to_read(self, config: str) -> list[tuple[int, str, int, int]]:
        """(image id, path, size, mtime_ns) of live photos not read yet at their current version
        with these OCR settings, by path."""
        return list(
            self.db.execute(
                """SELECT i.id, i.path, i.size, i.mtime_ns FROM image i LEFT JOIN ocr_scan s ON s.image_id = i.id
               WHERE i.deleted = 0 AND (s.image_id IS NULL OR s.size != i.size OR s.mtime_ns != i.mtime_ns
                                        OR s.config != ?)
               ORDER BY i.path""",
                (config,),
            )
        )

    def drop_all_text(self) -> int:
        """OCR turned off: forget every photo's and video's text. Inside a transaction. Returns
        the photos read."""
        n = int(self.db.execute("SELECT COUNT(*) FROM ocr_scan").fetchone()[0])
        self.db.execute("DELETE FROM detection WHERE kind = ?", (TEXT,))
        self.db.execute("DELETE FROM ocr_scan")
        self.db.execute("DELETE FROM ocr_video_scan")
        return n

    # -- reading (text_search.py, info) ---------------------------------------------------

    def lines_containing(self, needle: str, limit: int = 1000) -> list[TextLine]:
        """Lines of live photos and videos whose folded text contains `needle` (already folded).
        Through the trigram index for 3+ characters; shorter needles scan (the index cannot help them)."""
        if HAS_TRIGRAM and len(needle) >= 3:  # a quoted phrase of a trigram table: a sub-string
            where, arg = "text_index MATCH ?", '"' + needle.replace('"', '""') + '"'
        else:
            where, arg = "t.text LIKE ? ESCAPE '\\'", _like_pattern(needle)
        q = f"""SELECT {_LINE_COLUMNS} FROM text_index t JOIN detection d ON d.id = t.rowid
                {_LIVE_OWNER_JOIN} WHERE {where} AND {_LIVE_OWNER} LIMIT ?"""
        return _lines(self.db.execute(q, (arg, int(limit))))

    def lines_sharing_trigrams(self, needle: str, limit: int = 500) -> list[TextLine]:
        """Candidates for a fuzzy match of `needle` (folded, 4+ characters): lines with any of its
        trigrams, those sharing the most first (bm25), so one misread letter still finds them."""
        grams = sorted({needle[i : i + 3] for i in range(len(needle) - 2)})
        if not grams:
            return []
        if not HAS_TRIGRAM:  # no index to ask: every line is a candidate (text_search scores them all)
            q = f"""SELECT {_LINE_COLUMNS} FROM text_index t JOIN detection d ON d.id = t.rowid
                    {_LIVE_OWNER_JOIN} WHERE {_LIVE_OWNER}"""
            return _lines(self.db.execute(q))
        match = " OR ".join('"' + g.replace('"', '""') + '"' for g in grams)
        q = f"""SELECT {_LINE_COLUMNS} FROM text_index t JOIN detection d ON d.id = t.rowid
                {_LIVE_OWNER_JOIN}
                WHERE text_index MATCH ? AND {_LIVE_OWNER} ORDER BY t.rank LIMIT ?"""
        return _lines(self.db.execute(q, (match, int(limit))))

    def text_of_photos(self, image_ids: Sequence[int]) -> dict[int, list[TextLine]]:
        """image id -> its lines of text, in reading order (top to bottom, left to right)."""
        out: dict[int, list[TextLine]] = {}
        for chunk in chunks(list(image_ids)):
            q = f"""SELECT {_LINE_COLUMNS} FROM detection d WHERE d.kind = ? AND d.image_id IN ({marks(len(chunk))})
                    ORDER BY d.image_id, d.y0, d.x0"""
            for line in _lines(self.db.execute(q, (TEXT, *chunk))):
                assert line.image_id is not None  # photos' lines only
                out.setdefault(line.image_id, []).append(line)
        return out

    def text_of_videos(self, video_ids: Sequence[int]) -> dict[int, list[TextLine]]:
        """video id -> its lines of text (one per run of frames), by time, then top to bottom."""
        out: dict[int, list[TextLine]] = {}
        for chunk in chunks(list(video_ids)):
            q = f"""SELECT {_LINE_COLUMNS} FROM detection d WHERE d.kind = ? AND d.video_id IN ({marks(len(chunk))})
                    ORDER BY d.video_id, d.timestamp, d.y0, d.x0"""
            for line in _lines(self.db.execute(q, (TEXT, *chunk))):
                assert line.video_id is not None  # videos' lines only
                out.setdefault(line.video_id, []).append(line)
        return out

    def ocr_scans(self) -> list[tuple[str, int, float]]:
        """(path, lines found, seconds spent reading) of every live photo read (benchmarks)."""
        return list(
            self.db.execute(
                "SELECT i.path, s.lines, s.seconds FROM ocr_scan s JOIN image i ON i.id = s.image_id WHERE i.deleted = 0"
            )
        )

    def ocr_counts(self) -> tuple[int, int]:
        """(photos read, lines of text found) over live photos."""
        photos = self.db.execute(
            "SELECT COUNT(*) FROM ocr_scan s JOIN image i ON i.id = s.image_id WHERE i.deleted = 0"
        ).fetchone()[0]
        lines = self.db.execute(
            """SELECT COUNT(*) FROM detection d JOIN image i ON i.id = d.image_id
               WHERE d.kind = ? AND i.deleted = 0""",
            (TEXT,),
        ).fetchone()[0]
        return photos, lines

    def ocr_video_counts(self) -> tuple[int, int]:
        """(videos read, text rows stored: lines per run of frames) over live videos."""
        videos = self.db.execute(
            "SELECT COUNT(*) FROM ocr_video_scan s JOIN video v ON v.id = s.video_id WHERE v.deleted = 0"
        ).fetchone()[0]
        lines = self.db.execute(
            """SELECT COUNT(*) FROM detection d JOIN video v ON v.id = d.video_id
               WHERE d.kind = ? AND v.deleted = 0""",
            (TEXT,),
        ).fetchone()[0]
        return videos, lines


__all__ = ["SETTING_OCR", "TEXT", "TextLine", "TextTables", "fold"]
