"""Videos: sample frames with PyAV (the decode stage of a video item), scan, and show hits.

    file -> demux + decode (PyAV, frame threads) -> sampler -> frames
         -> crops (+ regions) -> encoder -> ONE catalog transaction per video (ingest/workers.py,
            the executor and ingest/write.py, as for photos)

The sampler keeps a frame every `every_seconds` and one at each scene change. Scene changes are
found by a cheap measure: every 1/`analysis_fps` seconds the decoded frame is shrunk (by swscale)
to a 64-pixel-wide RGB thumbnail and compared with the previous thumbnail; a mean absolute
difference above `scene_threshold` (0..1) is a cut, so a cut is found within 1/analysis_fps of
where it is. Frames in between are decoded (a P-frame needs its predecessors) but never converted,
and non-reference frames are not decoded at all (`skip_nonref`). A periodic sample that is almost
the same picture as the last embedded one, in every part of it (a static camera at night), is
skipped (`static_threshold`), at most for `max_static_seconds`. `keyframes_only` decodes only key frames:
much faster on long footage, but samples and cuts are then found at key frames only.

Each sampled frame is a `detection` row (video_id, timestamp, full-frame box, kind 'frame'), plus
'tile' / 'detector' rows for its regions when regions are on; each has an `embedding` row per model.
A video is written in one transaction (video row, detections, embeddings): a run killed half way
through a video leaves the catalog as it was, and the next run redoes that video. Broken videos
index what decodes and report the rest; a file that yields no frame at all is reported and not
written, so the next run tries it again (as with photos).

Timestamps are seconds from the start of the video stream (its start_time), as players show them.
PyAV is imported only when a video is met.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pixquery.catalog import Catalog
from pixquery.errors import PixqueryError
from pixquery.ingest import scan as scanning

if TYPE_CHECKING:  # annotations only: a search (merge_video_hits, describe_location) needs no PIL
    from PIL import Image

    from pixquery.ingest.crops import RegionConfig

VIDEO_KINDS = ("frame", "tile", "detector")
SETTING_VIDEO = "video"  # JSON of the SamplingConfig + RegionConfig the videos were indexed with
THUMB_WIDTH = 64
PROGRESS_SECONDS = 15.0  # a progress line (IndexProgress.stage) at most this often within one video


class VideoError(PixqueryError):
    """A video that yields no frame at all; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def have_av() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _av():
    try:
        import av
    except ImportError:
        raise PixqueryError("indexing videos needs PyAV: pip install 'pixquery[video]' (or pip install av)") from None
    # PyAV's log level stays None (its default: ffmpeg's messages are dropped in C). Any other
    # level installs a Python log callback that frame-threaded decoders call while the GIL is
    # held by the thread closing them: a deadlock (seen with h264 here). Broken files are
    # reported by us, once per file, instead.
    return av


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in scanning.VIDEO_EXTENSIONS


# -- facts about a video ------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None  # seconds, from the container (None when it does not say)
    fps: float | None
    width: int
    height: int
    frame_count: int | None  # from the container, else duration x fps
    codec: str
    start_time: float  # seconds of the stream's first frame (timestamps are relative to it)
    rotation: int = 0  # degrees counterclockwise the player turns the picture (phones: -90); width
    # and height are of the picture as shown, after that turn
    created: datetime | None = None  # the container's creation time (QuickTime/MP4 creation_time), aware


def _info(container, stream) -> VideoInfo:
    tb = stream.time_base
    duration = None
    if stream.duration is not None and tb is not None:
        duration = float(stream.duration * tb)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    frames = stream.frames or (int(round(duration * fps)) if duration and fps else None)
    start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
    cc = stream.codec_context
    from pixquery.ingest.metadata import quicktime_time

    return VideoInfo(
        duration,
        fps,
        cc.width,
        cc.height,
        frames,
        cc.name,
        start,
        created=quicktime_time({**dict(stream.metadata or {}), **dict(container.metadata or {})}),
    )


def _rotated(info: VideoInfo, rotation: int) -> VideoInfo:
    rotation = int(rotation or 0)
    if rotation % 180 == 0:
        return replace(info, rotation=rotation % 360 and rotation)
    return replace(info, width=info.height, height=info.width, rotation=rotation)


def _display_image(frame) -> Image.Image:
    """The frame as a player shows it: phones store portrait video sideways plus a rotation."""
    image = frame.to_image()
    rotation = getattr(frame, "rotation", 0) or 0
    if rotation % 360:
        image = image.rotate(rotation, expand=True)  # PIL turns counterclockwise, as the matrix says
    return image


def probe(path: str | os.PathLike) -> VideoInfo:
    """Duration, frame rate, size (as shown) and codec of a video, from its headers and its first
    frame. Raises VideoError."""
    av = _av()
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream in the file")
            stream = container.streams.video[0]
            info = _info(container, stream)
            try:
                first = next(container.decode(stream), None)
            except av.error.FFmpegError:
                first = None
            return _rotated(info, getattr(first, "rotation", 0)) if first is not None else info
    except av.error.FFmpegError as e:
        raise VideoError(path, _open_reason(e)) from None
    except OSError as e:
        raise VideoError(path, f"cannot read: {e.strerror or e}") from None


def _open_reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    if "moov atom not found" in str(e) or "Invalid data" in msg:
        return f"not a readable video (corrupt, truncated or unknown format): {msg}"
    return f"cannot open: {msg}"


# -- sampling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingConfig:
    every_seconds: float = 2.0  # a frame at least this often (0: scene changes only)
    scene_threshold: float = 0.10  # mean abs difference (0..1) of thumbnails that is a cut; 0: off
    analysis_fps: float = 4.0  # how often frames are compared for cuts
    min_scene_seconds: float = 0.5  # cuts closer than this to the last one are ignored (flashes)
    static_threshold: float = (
        0.02  # skip a periodic sample whose every part is this close to the last embedded one; 0: off
    )
    max_static_seconds: float = 60.0  # ... but never for longer than this
    skip_nonref: bool = True  # do not decode frames no other frame needs (B-frames)
    keyframes_only: bool = False  # decode key frames only (fast; coarse cuts)

    def __post_init__(self):
        if self.every_seconds < 0 or (self.every_seconds == 0 and self.scene_threshold <= 0):
            raise ValueError("every_seconds must be > 0 (or 0 with scene detection on)")
        if self.analysis_fps <= 0:
            raise ValueError("analysis_fps must be > 0")


@dataclass
class Frame:
    timestamp: float  # seconds from the start of the video
    image: Image.Image  # RGB, full resolution
    scene_change: bool  # sampled because a cut was found here (not because of the clock)
    difference: float | None  # thumbnail difference to the previously analysed frame


@dataclass
class DecodeStats:
    """What sampling one video did; filled while `sample_frames` runs."""

    info: VideoInfo | None = None
    decoded: int = 0  # frames the decoder produced (non-reference ones are not decoded)
    analysed: int = 0  # thumbnails compared for cuts
    sampled: int = 0  # frames yielded
    scene_changes: int = 0
    static_skipped: int = 0
    decode_errors: int = 0  # packets the decoder rejected
    first_error: str | None = None
    stopped_early: str | None = None  # why decoding ended before the end of the file
    last_timestamp: float | None = None
    seconds: float = 0.0  # wall time inside the decoder and sampler

    @property
    def decoded_seconds(self) -> float:
        if self.last_timestamp is None:
            return 0.0
        fps = self.info.fps if self.info and self.info.fps else 25.0
        return self.last_timestamp + 1.0 / fps

    def problem(self) -> str | None:
        """A sentence for the report when part of the video could not be used, else None."""
        parts = []
        dur = self.info.duration if self.info else None
        fps = self.info.fps if self.info and self.info.fps else 25.0
        cut = dur is not None and self.last_timestamp is not None and self.decoded_seconds < dur - max(1.0, 2.0 / fps)
        if self.stopped_early or cut:
            span = f"{_clock(self.decoded_seconds)} of {_clock(dur)}" if dur else _clock(self.decoded_seconds)
            parts.append(
                f"indexed {span} only; the rest is unreadable (truncated or corrupt)"
                + (f": {self.stopped_early}" if self.stopped_early else "")
            )
        if self.decode_errors:
            parts.append(f"{self.decode_errors} damaged packet(s) skipped ({self.first_error})")
        return "; ".join(parts) or None


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else format_timestamp(seconds)


def _thumb(frame, width: int, height: int) -> np.ndarray:
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray().astype(
        np.float32
    ) * (1.0 / 255.0)


def _diff(a: np.ndarray | None, b: np.ndarray) -> float | None:
    """Mean absolute difference of two thumbnails (0..1): large at a cut, whatever moves."""
    return None if a is None else float(np.abs(a - b).mean())


def _local_diff(a: np.ndarray | None, b: np.ndarray, cell: int = 4) -> float | None:
    """The largest mean absolute difference over cells of cell x cell thumbnail pixels (1/144 of a
    16:9 frame at 4 px): a person walking into a static shot changes one cell a lot and the whole
    picture very little, so this, not the global mean, decides whether a frame is 'the same'."""
    if a is None:
        return None
    d = np.abs(a - b).mean(axis=2)
    h, w = (d.shape[0] // cell) * cell, (d.shape[1] // cell) * cell
    if h == 0 or w == 0:
        return float(d.mean())
    return float(d[:h, :w].reshape(h // cell, cell, w // cell, cell).mean(axis=(1, 3)).max())


def sample_frames(
    path: str | os.PathLike,
    config: SamplingConfig | None = None,
    stats: DecodeStats | None = None,
    **overrides,
) -> Iterator[Frame]:
    """Decode a video and yield the sampled frames, in time order.

    Keyword overrides change single fields of `config` (e.g. every_seconds=1). Raises VideoError
    when the file cannot be opened or has no video stream; damage later in the file ends or thins
    the frames instead, and `stats` (filled as the iterator runs) says what happened.
    """
    config = replace(config or SamplingConfig(), **overrides)
    stats = stats if stats is not None else DecodeStats()
    av = _av()
    t_start = time.perf_counter()
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoError(path, _open_reason(e)) from None
    except OSError as e:
        raise VideoError(path, f"cannot read: {e.strerror or e}") from None
    try:
        if not container.streams.video:
            raise VideoError(path, "no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if config.keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        elif config.skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        info = stats.info = _info(container, stream)
        if not info.width or not info.height:
            raise VideoError(path, "the video stream has no picture size (unsupported or corrupt)")
        tw = THUMB_WIDTH
        th = max(4, int(round(THUMB_WIDTH * info.height / info.width)))
        step = 1.0 / config.analysis_fps
        eps = 1e-6
        t0 = info.start_time
        frame_dur = 1.0 / info.fps if info.fps else 0.04
        last_t: float | None = None
        next_analysis = 0.0
        prev_thumb = None  # last analysed thumbnail
        kept_thumb = None  # thumbnail of the last yielded frame
        last_sample = last_kept = last_cut = -1e18
        consecutive_errors = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as e:
                stats.stopped_early = _short(e)
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                stats.decode_errors += 1
                stats.first_error = stats.first_error or _short(e)
                consecutive_errors += 1
                if consecutive_errors >= 200:
                    stats.stopped_early = f"too many damaged packets in a row ({_short(e)})"
                    break
                continue
            consecutive_errors = 0
            for frame in frames:
                stats.decoded += 1
                if stats.decoded == 1 and getattr(frame, "rotation", 0):
                    info = stats.info = _rotated(info, frame.rotation)
                t = frame.time
                t = (last_t + frame_dur if last_t is not None else 0.0) if t is None else t - t0
                if last_t is not None and t < last_t - eps:
                    # Time went back (damaged timestamps): trust the frame's own time and restart
                    # the clocks there, so sampling goes on from it.
                    last_sample = min(last_sample, t - config.every_seconds) if last_sample > -1e17 else last_sample
                    last_cut = min(last_cut, t - config.min_scene_seconds)
                    next_analysis = t
                last_t = t
                if t < -eps:
                    continue  # pre-roll before the stream's start
                due_clock = config.every_seconds > 0 and t >= last_sample + config.every_seconds - eps
                due_analysis = config.scene_threshold > 0 and t >= next_analysis - eps
                if not (due_clock or due_analysis or last_sample < -1e17):
                    continue
                thumb = _thumb(frame, tw, th)
                diff = None
                cut = False
                if due_analysis:
                    stats.analysed += 1
                    diff = _diff(prev_thumb, thumb)
                    prev_thumb = thumb
                    next_analysis = (int(t / step + eps) + 1) * step
                    cut = (
                        diff is not None and diff >= config.scene_threshold and t - last_cut >= config.min_scene_seconds
                    )
                first = last_sample < -1e17
                if not (cut or due_clock or first):
                    continue
                last_sample = t
                if not (cut or first) and config.static_threshold > 0 and t - last_kept < config.max_static_seconds:
                    same = _local_diff(kept_thumb, thumb)
                    if same is not None and same < config.static_threshold:
                        stats.static_skipped += 1
                        continue
                if cut:
                    last_cut = t
                    stats.scene_changes += 1
                kept_thumb, last_kept = thumb, t
                stats.sampled += 1
                stats.last_timestamp = t
                image = _display_image(frame)
                stats.seconds += time.perf_counter() - t_start
                yield Frame(t, image, cut, diff)
                t_start = time.perf_counter()
            if last_t is not None:
                stats.last_timestamp = last_t
    finally:
        container.close()
        stats.seconds += time.perf_counter() - t_start


def _short(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0][:200]


def extract_frame(path: str | os.PathLike, timestamp: float) -> Image.Image:
    """The frame shown at `timestamp` seconds (as stored in a detection): for thumbnails of hits.
    Raises VideoError."""
    av = _av()
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream in the file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            info = _info(container, stream)
            target = info.start_time + max(0.0, float(timestamp))
            if stream.time_base is not None and timestamp > 0:
                container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
            best = None
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else target
                if best is not None and t > target + 1e-3:
                    break
                best = frame
                if abs(t - target) < 1e-3:
                    break
            if best is None:
                raise VideoError(path, f"no frame at {format_timestamp(timestamp)}")
            return _display_image(best)
    except av.error.FFmpegError as e:
        raise VideoError(path, _open_reason(e)) from None
    except OSError as e:
        raise VideoError(path, f"cannot read: {e.strerror or e}") from None


# -- catalog ------------------------------------------------------------------------------


def saved_sampling(catalog: Catalog) -> SamplingConfig | None:
    """The sampling settings the library's videos were last indexed with, or None."""
    text = catalog.get_setting(SETTING_VIDEO)
    if not text:
        return None
    known = {f for f in SamplingConfig.__dataclass_fields__}
    return SamplingConfig(**{k: v for k, v in json.loads(text).get("sampling", {}).items() if k in known})


def choose_sampling(catalog: Catalog, **overrides) -> SamplingConfig:
    """The sampling settings for an index run: the library's saved ones (else the defaults), with
    the fields the user gave (None values are ignored), e.g. choose_sampling(cat, every_seconds=args.every)."""
    base = saved_sampling(catalog) or SamplingConfig()
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def merge_gap_for(catalog: Catalog) -> float:
    """The gap (seconds) under which two hits of a video are 'adjacent': 1.5 sampling steps."""
    s = saved_sampling(catalog)
    return 1.5 * s.every_seconds if s and s.every_seconds > 0 else DEFAULT_MERGE_GAP


def config_json(sampling: SamplingConfig, regions: RegionConfig | None) -> str:
    return json.dumps({"sampling": asdict(sampling), "regions": asdict(regions) if regions else None}, sort_keys=True)


# -- scanning -----------------------------------------------------------------------------


def scan_videos(catalog: Catalog, roots: Sequence[str], excludes=None) -> scanning.ScanResult:
    """The video files under `roots` compared with the catalog's videos (new/changed, unchanged,
    deleted), like scan.scan for photos. A root that is a photo file is ignored; folder errors
    are left to the photo scan (which reports them) and only video files' errors are kept."""
    roots = [r for r in roots if not (os.path.isfile(r) and not is_video_path(r))]
    known: dict = {}
    for root in roots:
        known.update(catalog.videos_under(root))
    result = scanning.scan(roots, known, scanning.VIDEO_EXTENSIONS, excludes=excludes)  # root -> --exclude globs
    result.errors = [(p, r) for p, r in result.errors if is_video_path(p)]
    return result


# -- search results -----------------------------------------------------------------------

DEFAULT_MERGE_GAP = 1.5 * SamplingConfig.every_seconds  # adjacent samples are <= every_seconds apart


def merge_video_hits(results: Sequence, gap_seconds: float = DEFAULT_MERGE_GAP) -> list:
    """Merge hits of one video that are close in time into one result with `time_range`.

    `results`: SearchResult-like objects (video_id, timestamp, score, rank, time_range), best
    first. Hits of one video are sorted by time and split where two consecutive hits are more
    than `gap_seconds` apart; each group becomes its best hit (score, timestamp, box, detection)
    with time_range = (first, last timestamp) of the group, in the place of that best hit.
    Photo results pass through. Ranks are renumbered from 1. Returns a new list of copies (the
    same Results type, with its `dropped` and `threshold`, when given one).
    """
    groups: dict[int, list[tuple[int, object]]] = {}
    for pos, r in enumerate(results):
        if getattr(r, "video_id", None) is not None and getattr(r, "timestamp", None) is not None:
            groups.setdefault(r.video_id, []).append((pos, r))
    keep: dict[int, tuple[float, float]] = {}  # position of a group's best hit -> its time range
    for hits in groups.values():
        hits.sort(key=lambda ph: ph[1].timestamp)
        group = [hits[0]]
        for ph in hits[1:] + [None]:
            if ph is not None and ph[1].timestamp - group[-1][1].timestamp <= gap_seconds:
                group.append(ph)
                continue
            best_pos = min(p for p, _ in group)  # results come best first
            start = min(r.time_range[0] if r.time_range else r.timestamp for _, r in group)
            end = max(r.time_range[1] if r.time_range else r.timestamp for _, r in group)
            keep[best_pos] = (start, end)
            if ph is not None:
                group = [ph]
    out = []
    for pos, r in enumerate(results):
        if getattr(r, "video_id", None) is not None and getattr(r, "timestamp", None) is not None:
            if pos not in keep:
                continue
            r = replace(r, time_range=keep[pos])
        else:
            r = replace(r)
        out.append(r)
    for n, r in enumerate(out, 1):
        r.rank = n
    if hasattr(results, "dropped"):
        return type(results)(out, results.dropped, getattr(results, "threshold", None))
    return out


def format_timestamp(seconds: float) -> str:
    """751.9 -> '00:12:31': whole seconds, rounded down as players show time, hours always shown."""
    s = max(0, int(seconds + 1e-6)) if seconds is not None else 0
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def describe_location(result) -> str:
    """The CLI's text for where a hit is: 'path @ 00:12:31 (00:12:25-00:12:40) [box 0.10,0.20,0.45,0.60]'."""
    text = result.path
    if getattr(result, "timestamp", None) is not None and getattr(result, "video_id", None) is not None:
        text += f" @ {format_timestamp(result.timestamp)}"
        tr = getattr(result, "time_range", None)
        if tr and format_timestamp(tr[0]) != format_timestamp(tr[1]):
            text += f" ({format_timestamp(tr[0])}-{format_timestamp(tr[1])})"
    box = getattr(result, "box", None)
    if box:
        text += " [box " + ",".join(f"{v:.2f}" for v in box) + "]"
    return text


__all__ = [
    "VideoError",
    "VideoInfo",
    "SamplingConfig",
    "Frame",
    "DecodeStats",
    "have_av",
    "is_video_path",
    "probe",
    "sample_frames",
    "extract_frame",
    "scan_videos",
    "merge_video_hits",
    "format_timestamp",
    "describe_location",
    "DEFAULT_MERGE_GAP",
    "saved_sampling",
    "choose_sampling",
    "merge_gap_for",
]
