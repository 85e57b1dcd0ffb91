"""What a file says about itself: when and where it was taken, with which camera.

A photo's date is EXIF DateTimeOriginal (+ OffsetTimeOriginal when the camera wrote it), a video's
the container's creation time (QuickTime/MP4 `creation_time`, read by PyAV), and failing those the
file's modification time; `taken_source` records which ("exif", "quicktime", "mtime"). GPS position
and camera make/model come from EXIF. Pixel size and duration are already in the image and video rows.

Dates are kept as *wall-clock* seconds: the local time where the photo was taken, counted as if it
were UTC. That is what a person means by "June 2019" or "at 8 in the morning", whatever time zone
the camera was in, and it is what the date filters compare (pixquery.filters). When the offset is
known (EXIF OffsetTimeOriginal, a container's UTC time, the machine's zone for an mtime) it is kept
in `utc_offset` (minutes east of UTC), so the instant can be recovered: taken - utc_offset * 60.

Photos are read in the decode workers from the bytes already in memory (one read per file); files
indexed before this existed are filled in by `backfill`, which reads only their headers.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
TAG_MAKE, TAG_MODEL = 0x010F, 0x0110
TAG_DATETIME_ORIGINAL, TAG_OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4
SOURCES = ("exif", "quicktime", "mtime")

_EPOCH = datetime(1970, 1, 1)
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def wall_seconds(dt: datetime) -> float:
    """A naive (wall-clock) datetime as seconds, counted as if it were UTC."""
    return (dt.replace(tzinfo=None) - _EPOCH).total_seconds()


def wall_datetime(seconds: float) -> datetime:
    """The inverse of wall_seconds: a naive datetime."""
    return _EPOCH + timedelta(seconds=seconds)


def from_mtime(mtime_ns: int) -> dict:
    """The fallback: the file's modification time, on this machine's clock and zone."""
    local = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    offset = local.utcoffset()
    return {
        "taken": wall_seconds(local),
        "utc_offset": int(offset.total_seconds() // 60) if offset is not None else None,
        "taken_source": "mtime",
        "lat": None,
        "lon": None,
        "make": None,
        "model": None,
    }


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text or None


def _exif_date(value) -> datetime | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" (cameras also write blanks or zeros for unknown)."""
    text = _text(value)
    if not text:
        return None
    for fmt, n in (
        ("%Y:%m:%d %H:%M:%S", 19),
        ("%Y-%m-%d %H:%M:%S", 19),
        ("%Y-%m-%dT%H:%M:%S", 19),
        ("%Y:%m:%d %H:%M", 16),
    ):
        try:
            dt = datetime.strptime(text[:n], fmt)
            return dt if dt.year > 1900 else None
        except ValueError:
            continue
    return None


def _offset_minutes(value) -> int | None:
    m = _OFFSET.match(_text(value) or "")
    if not m:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return -minutes if m.group(1) == "-" else minutes


def _degrees(dms, ref) -> float | None:
    """EXIF GPS (degrees, minutes, seconds) rationals + N/S/E/W -> signed decimal degrees."""
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60 + s / 3600
    ref = (_text(ref) or "").upper()
    return -value if ref in ("S", "W") else value


def from_exif(exif) -> dict:
    """The fields a PIL Image.Exif holds (date and offset, GPS, make and model); missing ones None."""
    out: dict = {}
    sub = exif.get_ifd(EXIF_IFD)
    taken = _exif_date(sub.get(TAG_DATETIME_ORIGINAL))
    if taken is not None:
        out.update(
            taken=wall_seconds(taken),
            utc_offset=_offset_minutes(sub.get(TAG_OFFSET_TIME_ORIGINAL)),
            taken_source="exif",
        )
    gps = exif.get_ifd(GPS_IFD)
    if GPS_LAT in gps and GPS_LON in gps:
        lat, lon = _degrees(gps[GPS_LAT], gps.get(GPS_LAT_REF)), _degrees(gps[GPS_LON], gps.get(GPS_LON_REF))
        if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180 and (lat, lon) != (0.0, 0.0):
            out.update(lat=lat, lon=lon)
    out["make"], out["model"] = _text(exif.get(TAG_MAKE)), _text(exif.get(TAG_MODEL))
    return out


def photo_metadata(source, mtime_ns: int) -> dict:
    """A photo's metadata from its bytes (or an open binary file / a path): only the header is
    parsed, nothing decoded. Never raises: what cannot be read falls back to the mtime."""
    from pixquery.ingest.decode import open_header

    meta = from_mtime(mtime_ns)
    try:
        with open_header(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source) as img:
            meta.update(from_exif(img.getexif()))
    except Exception:  # no EXIF, a format PIL cannot parse, a damaged header: the mtime stands
        pass
    return meta


def quicktime_time(tags: dict) -> datetime | None:
    """An aware datetime from a container's `creation_time` tag (ISO 8601, usually UTC)."""
    text = _text(tags.get("creation_time") or tags.get("com.apple.quicktime.creationdate"))
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.year <= 1904:  # QuickTime's epoch: a camera that never set its clock
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def video_metadata(created: datetime | None, mtime_ns: int) -> dict:
    """A video's metadata: the container's creation time (shown in this machine's zone: the
    container keeps UTC only), else the mtime."""
    meta = from_mtime(mtime_ns)
    if created is not None:
        local = created.astimezone()
        offset = local.utcoffset()
        meta.update(
            taken=wall_seconds(local),
            utc_offset=int(offset.total_seconds() // 60) if offset else 0,
            taken_source="quicktime",
        )
    return meta


def read_video_metadata(path: str, mtime_ns: int) -> dict:
    """Open a video's container (PyAV) for its creation time only; mtime when that fails."""
    try:
        import av

        with av.open(path, metadata_errors="ignore") as container:
            return video_metadata(quicktime_time(dict(container.metadata)), mtime_ns)
    except Exception:
        return from_mtime(mtime_ns)


def backfill(catalog, on_progress=None, batch: int = 500) -> tuple[list[int], list[int]]:
    """Read the metadata of live files that have none (indexed before pixquery read it, or an
    older run): headers only, nothing re-embedded. Returns the (image ids, video ids) filled in."""
    import os

    photos = catalog.images_without_meta()
    videos = catalog.videos_without_meta()
    total, done = len(photos) + len(videos), 0
    work: Iterable = [(True, *p) for p in photos] + [(False, *v) for v in videos]
    rows: list = []

    def flush():
        if rows:
            with catalog.transaction():
                for is_photo, item_id, meta in rows:
                    catalog.put_meta(
                        meta, image_id=item_id if is_photo else None, video_id=None if is_photo else item_id
                    )
            rows.clear()

    for is_photo, item_id, path, mtime_ns in work:
        if is_photo:
            try:
                with open(path, "rb") as f:
                    meta = photo_metadata(f, mtime_ns)
            except OSError:
                meta = from_mtime(mtime_ns)
        else:
            meta = read_video_metadata(path, mtime_ns) if os.path.exists(path) else from_mtime(mtime_ns)
        rows.append((is_photo, item_id, meta))
        done += 1
        if len(rows) >= batch:
            flush()
            if on_progress:
                on_progress(done, total)
    flush()
    if on_progress and total:
        on_progress(done, total)
    return [p[0] for p in photos], [v[0] for v in videos]
