"""Search filters: one typed `Filter`, parsed once from the CLI, the Python API or HTTP parameters,
applied by the catalog (`Catalog.filter_refs`: which index ids pass) and by the search
(indexes/filtered.py: only those ids are returned, still k of them when k exist).

Dates are compared as wall-clock time where the photo was taken (ingest/metadata.py): `after`
is inclusive and `before` exclusive, each the *start* of the period written, so
`after="2019-06", before="2019-09"` keeps June, July and August 2019, and `after="2019-06-15"`
keeps that whole day on.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

import numpy as np

from pixquery.errors import PixqueryError

MEDIA_TYPES = ("photo", "video")
SORTS = ("score", "date")
DEFAULT_WITHIN_KM = 10.0
EARTH_RADIUS_KM = 6371.0088
# What a date may be written as: a year, a month, a day, a day and a time (minutes or seconds).
# The HTTP API's schema states these same patterns (server/routers/search.py), so every value
# they allow parses: a day past its month's end (2019-02-30) counts on into the next month.
_YEAR = "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_TIME = "(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?)"
DATE_PATTERN = rf"^{_YEAR}(?:-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12][0-9]|3[01]){_TIME}?)?)?$"
_LAT = r"-?(?:90(?:\.0+)?|[1-8]?[0-9](?:\.[0-9]+)?)"
_LON = r"-?(?:180(?:\.0+)?|(?:1[0-7][0-9]|[1-9]?[0-9])(?:\.[0-9]+)?)"
POINT_PATTERN = rf"^{_LAT},{_LON}$"  # LAT,LON in decimal degrees, within range


def parse_date(value, name: str = "date") -> datetime:
    """ "2019", "2019-06", "2019-06-15", "2019-06-15T08:30[:00]", or a date/datetime -> the start of
    that period, as a naive (wall-clock) datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = str(value)
    if not re.fullmatch(DATE_PATTERN, text):
        raise PixqueryError(f"{name} must be a date like 2019, 2019-06, 2019-06-15 or 2019-06-15T08:30, not {text!r}")
    numbers = [int(n) for n in re.findall(r"[0-9]+", text)]
    year, month, day, hour, minute, second = numbers + [1, 1, 0, 0, 0][len(numbers) - 1 :]
    return datetime(year, month, 1) + timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second)


def parse_point(value, name: str = "near") -> tuple[float, float]:
    """ "LAT,LON" (decimal degrees, POINT_PATTERN) or a (lat, lon) pair."""
    if isinstance(value, str):
        if not re.fullmatch(POINT_PATTERN, value):
            raise PixqueryError(
                f"{name} must be LAT,LON in decimal degrees, latitude within -90..90 and longitude "
                f"within -180..180 (e.g. 48.8584,2.2945), not {value!r}"
            )
        lat, lon = (float(x) for x in value.split(","))
        return lat, lon
    try:
        lat, lon = (float(x) for x in value)
    except (TypeError, ValueError):
        raise PixqueryError(f"{name} must be LAT,LON in decimal degrees (e.g. 48.8584,2.2945), not {value!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise PixqueryError(f"{name}: latitude must be within -90..90 and longitude within -180..180, not {lat},{lon}")
    return lat, lon


@dataclass(frozen=True)
class Filter:
    after: datetime | None = None  # taken at or after (wall clock)
    before: datetime | None = None  # taken before (wall clock)
    folders: tuple[str, ...] = ()  # absolute paths: files in any of them (or below)
    media: str | None = None  # "photo" (photos and their regions) | "video" (frames)
    camera: str | None = None  # substring of "make model", any case
    near: tuple[float, float] | None = None  # (lat, lon)
    within_km: float = DEFAULT_WITHIN_KM  # with `near`

    @classmethod
    def parse(cls, *, after=None, before=None, folders=(), media=None, camera=None, near=None, within=None) -> Filter:
        """From user input (strings or typed values); raises PixqueryError naming the bad value."""
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        f = cls(
            after=parse_date(after, "after") if after is not None else None,
            before=parse_date(before, "before") if before is not None else None,
            folders=tuple(
                os.path.abspath(os.path.expanduser(os.fspath(p))).rstrip(os.sep) or os.sep
                for p in folders or ()
                if os.fspath(p)
            ),
            media=(media or None) and str(media).lower(),
            camera=(camera or "").strip() or None,
            near=parse_point(near) if near is not None else None,
        )
        if f.media is not None and f.media not in MEDIA_TYPES:
            raise PixqueryError(f"type must be one of {', '.join(MEDIA_TYPES)}, not {media!r}")
        if within not in (None, ""):
            try:
                km = float(within)
            except (TypeError, ValueError):
                raise PixqueryError(f"within must be a distance in km, not {within!r}") from None
            if not km > 0 or math.isinf(km):
                raise PixqueryError(f"within must be a positive distance in km, not {within!r}")
            if f.near is None:
                raise PixqueryError("within needs near=LAT,LON (the centre)")
            f = replace(f, within_km=km)
        if f.after and f.before and f.after >= f.before:
            raise PixqueryError(
                f"after ({f.after:%Y-%m-%d %H:%M}) must be earlier than before ({f.before:%Y-%m-%d %H:%M})"
            )
        return f

    @property
    def active(self) -> bool:
        return bool(self.after or self.before or self.folders or self.media or self.camera or self.near)

    @property
    def needs_meta(self) -> bool:
        """Whether it reads the media_meta table (dates, places, cameras)."""
        return bool(self.after or self.before or self.camera or self.near)

    def bounding_box(self) -> tuple[float, float, float, float] | None:
        """(lat_min, lat_max, lon_min, lon_max) around `near`: a cheap first cut (SQL), refined by
        `close_enough`. Wider than the circle; the whole longitude range near a pole or the date line."""
        if self.near is None:
            return None
        lat, lon = self.near
        dlat = math.degrees(self.within_km / EARTH_RADIUS_KM)
        cos = math.cos(math.radians(lat))
        if abs(lat) + dlat >= 90 or cos < 1e-6:
            return lat - dlat, lat + dlat, -180.0, 180.0
        dlon = math.degrees(self.within_km / (EARTH_RADIUS_KM * cos))
        if lon - dlon < -180 or lon + dlon > 180:
            return lat - dlat, lat + dlat, -180.0, 180.0
        return lat - dlat, lat + dlat, lon - dlon, lon + dlon

    def close_enough(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Which points lie within `within_km` of `near` (great-circle distance, haversine)."""
        return distance_km(self.near, lat, lon) <= self.within_km

    def milvus_expression(self) -> str:
        """The part of the filter a Milvus collection can evaluate on the fields it keeps beside
        each vector (indexes/milvus.py FIELDS: media, taken); the rest (folders below an indexed
        one, camera, place) is applied to its hits by the allow-list."""
        from pixquery.ingest.metadata import wall_seconds

        parts = []
        if self.media == "photo":
            parts.append("media in [0, 1]")
        elif self.media == "video":
            parts.append("media == 2")
        if self.after is not None:
            parts.append(f"taken >= {math.floor(wall_seconds(self.after))}")
        if self.before is not None:
            parts.append(f"taken < {math.ceil(wall_seconds(self.before))}")
        return " and ".join(parts)

    def to_params(self) -> dict:
        """As HTTP query parameters / JSON (the inverse of `parse`)."""
        out: dict = {}
        if self.after:
            out["after"] = self.after.isoformat(timespec="seconds")
        if self.before:
            out["before"] = self.before.isoformat(timespec="seconds")
        if self.folders:
            out["in"] = list(self.folders)
        if self.media:
            out["type"] = self.media
        if self.camera:
            out["camera"] = self.camera
        if self.near:
            out["near"] = f"{self.near[0]},{self.near[1]}"
            out["within"] = self.within_km
        return out


def distance_km(point: tuple[float, float], lat, lon) -> np.ndarray:
    lat1, lon1 = np.radians(point[0]), np.radians(point[1])
    lat2, lon2 = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def check_sort(sort: str | None) -> str:
    sort = (sort or "score").lower()
    if sort not in SORTS:
        raise PixqueryError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    return sort


__all__ = ["Filter", "MEDIA_TYPES", "SORTS", "check_sort", "distance_km", "parse_date", "parse_point"]
