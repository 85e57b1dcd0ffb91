"""The decode workers' jobs: an item in, pieces out (decoded pixels, cut into crops, normalised).

They run in worker processes (local executor) or Ray tasks, so everything here is a plain
function of its arguments. A photo is read once (hashed and decoded from the same bytes) and
decoded once, at the smallest JPEG draft scale that still gives every crop full resolution (and,
with OCR on, text detection its `det_side`); text detection runs here on those same pixels, in
parallel with the encoder, and only a photo where it found text is decoded again, bigger, for
recognition (ingest/ocr.py); a video is sampled with PyAV and comes out as pieces of a few frames each, as it decodes
(with OCR on, each frame kept is read too, its lines folded into runs: ingest/video_text.py).
Failures never raise: they come back as a piece with `failure` (or, for a video that decoded in
part, `problem`), the reason naming what went wrong.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator

import numpy as np

from pixquery import _failpoints
from pixquery.errors import BadImage
from pixquery.ingest.crops import crops_of, draft_size
from pixquery.ingest.decode import MAX_PIXELS, load, normalize
from pixquery.ingest.items import VIDEO, DecodeSettings, MediaItem, Piece, failed
from pixquery.ingest.metadata import photo_metadata, video_metadata

VIDEO_PIECE_CROPS = 16  # a video's crops are sent on in pieces of about this many


def read_bytes(path: str) -> bytes:
    """A file's bytes: a local path, or a URL fsspec knows (s3://, gs://, ...) when installed."""
    if "://" in path and not path.startswith("file://"):
        import fsspec  # the [ray] extra: object storage

        with fsspec.open(path, "rb") as f:
            return f.read()
    with open(path.removeprefix("file://"), "rb") as f:
        return f.read()


def photo_piece(item: MediaItem, data: bytes, settings: DecodeSettings, *, max_pixels: int = MAX_PIXELS) -> Piece:
    """A photo's bytes -> its piece: the whole picture (unless `item.whole` is False) and its
    regions (when `item.regions`), cut from the same decoded pixels. Raises BadImage."""
    if not data:
        raise BadImage(item.path, "empty file (0 bytes)")
    cfg = settings.preprocess
    regions = settings.regions if item.regions else None
    ocr = settings.ocr if item.read_text else None
    draft = draft_size(cfg, regions) if settings.draft else None
    if draft and ocr is not None:
        # JPEG draft keeps the short side >= draft: 3/4 of det_side gives detection its long side
        # (a 4:3 or wider photo) at one scale step more, not the full decode.
        draft = max(draft, ocr.det_side * 3 // 4)
    img, width, height = load(io.BytesIO(data), draft, name=item.path, max_pixels=max_pixels)
    crops = crops_of(img, cfg, whole=item.whole, regions=regions)
    pixels = normalize(np.stack([c.pixels for c in crops]), cfg)
    # Date taken, GPS, camera from the same bytes (the header only: nothing decoded twice).
    meta = photo_metadata(data, item.mtime_ns)
    piece = Piece(
        item,
        [c.region for c in crops],
        pixels,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        info={"meta": meta},
    )
    if ocr is not None:
        t = time.perf_counter()
        piece.text = read_text(item, data, img, max(width, height), ocr, max_pixels)
        piece.text_seconds = time.perf_counter() - t
    return piece


_readers = threading.local()  # per worker (process or thread): TextReader is not thread-safe


def _reader(config):
    from pixquery.ingest.ocr import TextReader

    cached = getattr(_readers, "reader", None)
    if cached is None or cached.config != config:
        # One ONNX Runtime thread: the workers are as many as the cores and run side by side.
        cached = _readers.reader = TextReader(config, threads=1)
    return cached


def read_text(item: MediaItem, data: bytes, img, own_side: int, config, max_pixels: int = MAX_PIXELS) -> list | None:
    """The photo's lines of text (ocr.TextBox): detection on `img` (the pixels already decoded
    for the crops), then, only where it found boxes, recognition, from a bigger decode of `data`
    only when the smallest box is too small in `img` for the recogniser.
    None when reading failed: the OCR pass after the run reads it again and reports why."""
    try:
        reader = _reader(config)
        quads = reader.detect(img)
        if not len(quads):
            return []
        big = img
        short = reader.recognition_short_side(quads, img.size, own_side)
        if short > min(img.size):  # decoded small (JPEG draft) for text this small: again, bigger
            big, _, _ = load(io.BytesIO(data), short, name=item.path, max_pixels=max_pixels)
        return reader.recognise(big, quads)
    except Exception:  # a reading failure must not lose the photo's embedding
        return None


def decode_photo(item: MediaItem, settings: DecodeSettings) -> Piece:
    """One photo file -> one piece (read once: hashed and decoded from the same bytes). Never
    raises: a file that cannot be used is a piece with `failure`."""
    try:
        _failpoints.hit("decode_worker/" + os.path.basename(item.path))  # crash tests: kill this worker
        try:
            data = read_bytes(item.path)
        except OSError as e:
            raise BadImage(item.path, f"cannot read: {e.strerror or e}") from None
        return photo_piece(item, data, settings)
    except BadImage as e:
        return failed(item, e.reason)
    except Exception as e:  # a bug in a codec or a detector must not stop a 100,000-photo run
        return failed(item, f"unexpected {type(e).__name__}: {e}")


def decode_video(item: MediaItem, settings: DecodeSettings) -> Iterator[Piece]:
    """One video -> pieces of sampled frames (each with its regions when regions are on), the last
    one `final`, carrying the video's facts (`info`) and what could not be decoded (`problem`)
    and, when asked (`item.read_text`), the text read in its frames (`text`: video_text.TextRun
    each). A video that yields no frame at all is one final piece with `failure`."""
    from pixquery.ingest.video import DecodeStats, VideoError, sample_frames

    cfg = settings.preprocess
    stats = DecodeStats()
    regions, pixels = [], []
    sent = 0
    stopped = None
    text = _VideoText(settings.ocr) if item.read_text and settings.ocr is not None else None
    try:
        for frame in sample_frames(item.path, settings.sampling, stats):
            if text is not None:
                text.read(frame)
            for c in crops_of(
                frame.image, cfg, regions=settings.regions, timestamp=frame.timestamp, whole_kind="frame"
            ):
                regions.append(c.region)
                pixels.append(c.pixels)
            if len(pixels) >= VIDEO_PIECE_CROPS:
                yield Piece(item, regions, normalize(np.stack(pixels), cfg), final=False)
                sent += len(regions)
                regions, pixels = [], []
    except VideoError as e:
        if not sent and not regions:
            yield failed(item, e.reason)
            return
        stopped = e.reason
    except Exception as e:  # a codec or detector bug must not stop a run over many files
        if not sent and not regions:
            yield failed(item, f"unexpected {type(e).__name__}: {e}")
            return
        stopped = f"unexpected {type(e).__name__}: {e}"
    if stopped:
        stats.stopped_early = stats.stopped_early or stopped
    if not sent and not regions:
        reason = stats.problem() or "no frame could be decoded"
        if stats.decoded == 0 and not stats.problem():
            reason = "no frame could be decoded (empty or unsupported video)"
        yield failed(item, reason)
        return
    info = stats.info
    problem = stats.problem()
    duration = stats.decoded_seconds if problem and stats.stopped_early else (info.duration or stats.decoded_seconds)
    facts = {
        "width": info.width,
        "height": info.height,
        "duration": duration,
        "fps": info.fps,
        "frame_count": info.frame_count,
        "decoded_frames": stats.decoded,
        "total_frames": info.frame_count or stats.decoded,
        "decode_seconds": stats.seconds,
        "meta": video_metadata(info.created, item.mtime_ns),
    }
    if text is not None:
        facts["text_frames"] = text.runs.frames
    yield Piece(
        item,
        regions,
        normalize(np.stack(pixels), cfg) if pixels else None,
        final=True,
        width=info.width,
        height=info.height,
        problem=problem,
        info=facts,
        text=text.result() if text is not None else None,
        text_seconds=text.seconds if text is not None else 0.0,
    )


class _VideoText:
    """The text of one video's frames as they are decoded: each frame read (ocr.TextReader), its
    lines folded into runs (video_text.TextRuns). A reading failure stops reading this video
    (`result()` None: the OCR pass after the run tries again and says why), never its embedding."""

    def __init__(self, config):
        from pixquery.ingest.video_text import TextRuns

        self.config, self.runs, self.seconds, self.failed = config, TextRuns(), 0.0, False

    def read(self, frame) -> None:
        if self.failed:
            return
        t = time.perf_counter()
        try:
            self.runs.add(frame.timestamp, _reader(self.config).read(frame.image))
        except Exception:
            self.failed = True
        self.seconds += time.perf_counter() - t

    def result(self) -> list | None:
        return None if self.failed else self.runs.runs()


def decode_item(item: MediaItem, settings: DecodeSettings) -> Iterator[Piece]:
    """Any item -> its pieces (what a Ray task runs; the local executor calls the two above)."""
    if item.kind == VIDEO:
        yield from decode_video(item, settings)
    else:
        yield decode_photo(item, settings)
