"""Text in video frames (OCR): every frame a video keeps is read, and a line that stays on screen
over consecutive frames is stored once, with the run of frames it stays on.

With OCR on for the library, the frames the sampler keeps (ingest/video.py: one per 2 s and one at
each cut) are read as photos are (ingest/ocr.py TextReader: detection on the frame scaled to
`det_side`, recognition of the boxes found only, cut from the frame at full resolution). A video
being (re-)embedded is read in its decode process as its frames come (ingest/workers.py
`decode_video`), and its text is written with its frames, in the video's one transaction; a video
embedded before OCR was on (or read with other settings) is read by `read_videos`, a pass after
the embedding stage that samples the same frames again (the sampler is deterministic).

Why runs and not a row per frame: consecutive frames mostly show the same text (a channel logo, a
caption held for seconds, a slide), so a row per frame would store a 10-minute video's logo 300
times, fill the trigram index with copies, and let one video's copies crowd the text side's
candidate lines (it reads at most a few hundred per word) out of every photo's. A run also says
what a search should answer: the video, at the time the text appears, visible until when. Lines
are the same when their folded text is (catalog/text.py `fold`); a run survives one frame where
the line was not read (OCR flickers: a frame blurred by motion), and keeps the best-scored
reading's text and box. A misreading is a line of its own (it is also findable by the fuzzy
search, for what it says).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pixquery.catalog import Catalog
from pixquery.catalog.text import fold

PATIENCE = 1  # sampled frames a line may be missed in and still continue its run


@dataclass
class TextRun:
    """A line of text and the run of sampled frames it stays on (first and last frame, seconds)."""

    text: str  # as read in the frame where its score was best
    box: tuple[float, float, float, float]
    score: float
    start: float
    end: float

    def row(self) -> tuple:
        """(text, box, score, start, end): what Catalog.replace_video_text stores."""
        return (self.text, self.box, self.score, self.start, self.end)


@dataclass
class TextRuns:
    """Folds the lines read in a video's sampled frames, given in time order, into runs."""

    patience: int = PATIENCE
    frames: int = 0  # frames added
    _open: dict[str, list] = field(default_factory=dict)  # folded text -> [run, frames missed since]
    _closed: list[TextRun] = field(default_factory=list)

    def add(self, timestamp: float, lines: Iterable) -> None:
        """The lines (ocr.TextBox) read in the frame at `timestamp`."""
        self.frames += 1
        seen: set[str] = set()
        for line in lines:
            key = " ".join(fold(line.text).split())
            if not key or key in seen:  # the same words twice in one frame: one run
                continue
            seen.add(key)
            entry = self._open.get(key)
            if entry is None:
                self._open[key] = [TextRun(line.text, tuple(line.box), float(line.score), timestamp, timestamp), 0]
                continue
            run = entry[0]
            run.end, entry[1] = timestamp, 0
            if line.score > run.score:
                run.text, run.box, run.score = line.text, tuple(line.box), float(line.score)
        for key in [k for k in self._open if k not in seen]:
            entry = self._open[key]
            entry[1] += 1
            if entry[1] > self.patience:
                self._closed.append(self._open.pop(key)[0])

    def runs(self) -> list[TextRun]:
        """Every run (the open ones closed), by start time then position."""
        out = self._closed + [entry[0] for entry in self._open.values()]
        return sorted(out, key=lambda r: (r.start, r.box[1], r.box[0]))


def read_frames(reader, frames: Iterable) -> tuple[list[TextRun], int]:
    """Read `frames` (video.Frame, in time order) with `reader` (ocr.TextReader): the runs of
    lines, and how many frames were read."""
    runs = TextRuns()
    for frame in frames:
        runs.add(frame.timestamp, reader.read(frame.image))
    return runs.runs(), runs.frames


@dataclass
class VideoTextReport:
    videos: int = 0  # videos read in this pass
    frames: int = 0  # sampled frames read
    lines: int = 0  # text rows stored (one per line and run)
    seconds: float = 0.0
    failed: list = field(default_factory=list)  # (path, reason)


def read_videos(
    catalog: Catalog,
    config,
    sampling,
    *,
    reader=None,
    on_progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
) -> VideoTextReport:
    """Read the text of every live video not read at its current version with `config` (an
    ocr.OcrConfig, resolved), sampling the frames the library keeps (`sampling`, video.SamplingConfig)
    again, and store it: one transaction per video. A video that cannot be decoded now is reported
    and skipped (read again by the next run)."""
    from pixquery.ingest.ocr import TextReader
    from pixquery.ingest.video import VideoError, sample_frames

    key = config.to_json()
    todo = catalog.videos_to_read(key)
    report = VideoTextReport()
    if not todo:
        return report
    reader = reader or TextReader(config)
    t0 = time.perf_counter()
    for n, (video_id, path, size, mtime_ns) in enumerate(todo, 1):
        t = time.perf_counter()
        try:
            runs, frames = read_frames(reader, sample_frames(path, sampling))
        except VideoError as e:
            reason = e.reason
        except Exception as e:  # an engine or codec bug on one video must not stop the run
            reason = f"text reading failed: {type(e).__name__}: {e}"
        else:
            reason = None
            with catalog.transaction():
                catalog.replace_video_text(
                    video_id,
                    [r.row() for r in runs],
                    size=size,
                    mtime_ns=mtime_ns,
                    config=key,
                    frames=frames,
                    seconds=time.perf_counter() - t,
                )
            report.videos += 1
            report.frames += frames
            report.lines += len(runs)
        if reason is not None:
            report.failed.append((path, reason))
            if on_failure:
                on_failure(path, reason)
        if on_progress:
            on_progress(n, len(todo))
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["PATIENCE", "TextRun", "TextRuns", "VideoTextReport", "read_frames", "read_videos"]
