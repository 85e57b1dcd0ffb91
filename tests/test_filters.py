"""Metadata (date taken, GPS, camera) and filtered search: EXIF written with Pillow, read back by
indexing, and filters that keep exactly what passes them in the Python API and the CLI."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from clirun import pixquery
from pixquery import indexes
from pixquery.api import Library
from pixquery.errors import PixqueryError
from pixquery.filters import Filter, distance_km
from pixquery.indexes.filtered import FilteredIndex, allowed_mask
from pixquery.ingest import metadata

EIFFEL = (48.8584, 2.2945)
SYDNEY = (-33.8568, 151.2153)


def _dms(value: float):
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = round((value - d - m / 60) * 3600 * 100)
    return (IFDRational(d), IFDRational(m), IFDRational(s, 100))


def exif_jpeg(
    path: Path,
    seed: int,
    taken: str | None = None,
    offset: str | None = None,
    gps=None,
    make: str | None = None,
    model: str | None = None,
) -> Path:
    """A real JPEG with real EXIF (Pillow writes the IFDs), random pixels."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    if make:
        exif[metadata.TAG_MAKE] = make
    if model:
        exif[metadata.TAG_MODEL] = model
    if taken:
        sub = exif.get_ifd(metadata.EXIF_IFD)
        sub[metadata.TAG_DATETIME_ORIGINAL] = taken
        if offset:
            sub[metadata.TAG_OFFSET_TIME_ORIGINAL] = offset
    if gps:
        g = exif.get_ifd(metadata.GPS_IFD)
        g[metadata.GPS_LAT_REF], g[metadata.GPS_LAT] = ("N" if gps[0] >= 0 else "S"), _dms(gps[0])
        g[metadata.GPS_LON_REF], g[metadata.GPS_LON] = ("E" if gps[1] >= 0 else "W"), _dms(gps[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif)
    return path


@pytest.fixture
def photo_tree(tmp_path):
    """beach/ (summer 2019, Paris GPS, a Canon), city/ (winter 2019 and summer 2020, Sydney GPS, a
    Pixel), undated/ (no EXIF: the mtime, set to 2019-07-01)."""
    root = tmp_path / "photos"
    beach = [
        exif_jpeg(
            root / "beach" / f"b{i}.jpg",
            i,
            f"2019:{6 + i % 3:02d}:{10 + i} 12:00:00",
            "+02:00",
            EIFFEL,
            "Canon",
            "Canon EOS 5D",
        )
        for i in range(6)
    ]
    city = [
        exif_jpeg(
            root / "city" / f"c{i}.jpg",
            100 + i,
            f"{2019 + i % 2}:{1 if i % 2 == 0 else 7:02d}:05 09:00:00",
            None,
            SYDNEY,
            "Google",
            "Pixel 7",
        )
        for i in range(6)
    ]
    undated = [exif_jpeg(root / "undated" / f"u{i}.jpg", 200 + i) for i in range(3)]
    t = datetime(2019, 7, 1, 12).timestamp()
    for p in undated:
        os.utime(p, (t, t))
    return root, beach, city, undated


def _paths(results):
    return {Path(r.path).name for r in results}


# -- parsing ------------------------------------------------------------------------------------------------


def test_filter_parses_periods_and_rejects_bad_values():
    f = Filter.parse(
        after="2019-06",
        before="2019-09",
        folders=["~/x", "/a/b/"],
        media="Photo",
        camera=" canon ",
        near="48.85,2.29",
        within="5",
    )
    assert f.after == datetime(2019, 6, 1) and f.before == datetime(2019, 9, 1)
    assert f.folders == (os.path.expanduser("~/x"), "/a/b") and f.media == "photo" and f.camera == "canon"
    assert f.near == (48.85, 2.29) and f.within_km == 5.0 and f.active
    assert not Filter.parse().active
    assert Filter.parse(after="2019").after == datetime(2019, 1, 1)
    assert Filter.parse(before="2019-06-15T08:30").before == datetime(2019, 6, 15, 8, 30)
    for kw, words in [
        ({"after": "June"}, "after must be a date"),
        ({"near": "91,0"}, "latitude"),
        ({"near": "abc"}, "LAT,LON"),
        ({"media": "gif"}, "type must be one of"),
        ({"within": "3"}, "within needs near"),
        ({"near": "1,1", "within": "-2"}, "positive"),
        ({"after": "2020", "before": "2019"}, "must be earlier"),
    ]:
        with pytest.raises(PixqueryError, match=words):
            Filter.parse(**kw)


def test_haversine_distance():
    # Paris - Sydney great-circle distance is about 16,960 km
    assert abs(float(distance_km(EIFFEL, SYDNEY[0], SYDNEY[1])) - 16960) < 40
    assert float(distance_km(EIFFEL, EIFFEL[0], EIFFEL[1])) == pytest.approx(0, abs=1e-6)


# -- reading metadata ---------------------------------------------------------------------------------------


def test_exif_date_offset_gps_and_camera_are_read(tmp_path):
    p = exif_jpeg(
        tmp_path / "a.jpg", 1, "2019:07:14 10:30:05", "-05:30", (-33.8568, -70.5), "NIKON CORPORATION", "NIKON D750"
    )
    m = metadata.photo_metadata(p.read_bytes(), 0)
    assert m["taken_source"] == "exif" and metadata.wall_datetime(m["taken"]) == datetime(2019, 7, 14, 10, 30, 5)
    assert m["utc_offset"] == -330
    assert m["lat"] == pytest.approx(-33.8568, abs=1e-4) and m["lon"] == pytest.approx(-70.5, abs=1e-4)
    assert (m["make"], m["model"]) == ("NIKON CORPORATION", "NIKON D750")


def test_no_exif_falls_back_to_the_mtime(tmp_path):
    p = exif_jpeg(tmp_path / "plain.jpg", 2)
    mtime_ns = int(datetime(2018, 3, 4, 5, 6, 7).timestamp() * 1e9)
    m = metadata.photo_metadata(p.read_bytes(), mtime_ns)
    assert m["taken_source"] == "mtime" and metadata.wall_datetime(m["taken"]) == datetime(2018, 3, 4, 5, 6, 7)
    assert m["lat"] is None and m["make"] is None
    # garbage is not an error: the mtime stands
    assert metadata.photo_metadata(b"not an image", mtime_ns)["taken_source"] == "mtime"


def test_quicktime_creation_time_is_read():
    created = metadata.quicktime_time({"creation_time": "2021-08-01T06:15:00.000000Z"})
    m = metadata.video_metadata(created, 0)
    assert m["taken_source"] == "quicktime"
    # wall clock in this machine's zone, and the offset recovers the instant
    assert m["taken"] - m["utc_offset"] * 60 == pytest.approx(created.timestamp())
    assert metadata.quicktime_time({"creation_time": "1904-01-01T00:00:00Z"}) is None  # clock never set
    assert metadata.quicktime_time({}) is None


# -- filtered search through the library -------------------------------------------------------------------


@pytest.fixture
def indexed(photo_tree, library_dir, tiny_model):
    root, beach, city, undated = photo_tree
    lib = Library.open(library_dir, model=str(tiny_model))
    report = lib.index([root], workers=1)
    assert report.indexed == 15 and not report.failed
    yield lib, root, beach, city, undated
    lib.close()


def test_metadata_is_stored_and_returned_with_results(indexed):
    lib, root, beach, city, undated = indexed
    results = lib.search("a beach", k=20)
    assert len(results) == 15
    by_name = {Path(r.path).name: r for r in results}
    b0 = by_name["b0.jpg"]
    assert b0.taken == "2019-06-10T12:00:00" and b0.taken_source == "exif" and b0.camera == "Canon EOS 5D"
    assert (b0.lat, b0.lon) == (pytest.approx(EIFFEL[0], abs=1e-4), pytest.approx(EIFFEL[1], abs=1e-4))
    assert by_name["c1.jpg"].camera == "Google Pixel 7"
    u = by_name["u0.jpg"]
    assert u.taken_source == "mtime" and u.taken.startswith("2019-07-01") and u.lat is None


def test_date_folder_camera_and_place_filters_keep_exactly_what_passes(indexed):
    lib, root, beach, city, undated = indexed
    summer = lib.search("a beach", k=50, after="2019-06", before="2019-09")
    assert _paths(summer) == {p.name for p in beach} | {p.name for p in undated}
    assert _paths(lib.search("x", k=50, after="2019-06", before="2019-09", folders=[root / "beach"])) == {
        p.name for p in beach
    }
    assert _paths(lib.search("x", k=50, before="2019-06")) == {"c0.jpg", "c2.jpg", "c4.jpg"}
    assert _paths(lib.search("x", k=50, after="2020")) == {"c1.jpg", "c3.jpg", "c5.jpg"}
    assert _paths(lib.search("x", k=50, camera="pixel")) == {p.name for p in city}
    assert _paths(lib.search("x", k=50, near=f"{SYDNEY[0]},{SYDNEY[1]}", within=1)) == {p.name for p in city}
    assert _paths(lib.search("x", k=50, near="48.86,2.30", within=2)) == {p.name for p in beach}
    assert _paths(lib.search("x", k=50, near="0,0", within=500)) == set()
    assert _paths(lib.search("x", k=50, media="video")) == set()
    assert len(lib.search("x", k=50, media="photo")) == 15
    # several folders: either one
    assert _paths(lib.search("x", k=50, folders=[root / "beach", root / "undated"])) == {p.name for p in beach} | {
        p.name for p in undated
    }
    # k of them when k pass, best first among them
    three = lib.search("x", k=3, folders=[root / "city"])
    assert len(three) == 3 and _paths(three) <= {p.name for p in city}
    assert [r.score for r in three] == sorted((r.score for r in three), reverse=True)


def test_sort_by_date_orders_the_results(indexed):
    lib, root, *_ = indexed
    results = lib.search("x", k=50, sort="date")
    dates = [r.taken for r in results]
    assert dates == sorted(dates) and len(dates) == 15
    assert [r.rank for r in results] == list(range(1, 16))
    with pytest.raises(PixqueryError, match="sort must be one of"):
        lib.search("x", sort="colour")


def test_strategies_agree_on_a_real_library(indexed):
    lib, root, beach, *_ = indexed
    a = lib.search("x", k=4, folders=[root / "beach"], strategy="prefilter")
    b = lib.search("x", k=4, folders=[root / "beach"], strategy="postfilter")
    assert [r.path for r in a] == [r.path for r in b] and len(a) == 4


def test_an_older_library_gets_its_metadata_on_the_next_rescan_without_re_embedding(indexed):
    lib, root, beach, city, undated = indexed
    cat = lib.catalog
    with cat.transaction():  # as a library indexed before metadata existed: no rows
        cat.db.execute("DELETE FROM media_meta")
    assert cat.count_without_meta() == 15
    assert lib.search("x", k=50, after="2019-06", before="2019-09") == []
    report = lib.index(workers=1)
    assert report.indexed == 0 and report.skipped == 15  # nothing re-embedded
    assert cat.count_without_meta() == 0
    assert _paths(lib.search("x", k=50, after="2019-06", before="2019-09", folders=[root / "beach"])) == {
        p.name for p in beach
    }


# -- exactness of the two strategies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,params", [("flat", {}), ("flat", {"storage": "float16"}), ("ivf", {"nlist": 64, "nprobe": 4})]
)
@pytest.mark.parametrize("selectivity", [0.001, 0.01, 0.1, 0.5])
def test_filtered_search_returns_k_when_k_pass(kind, params, selectivity):
    rng = np.random.default_rng(7)
    n, dim, k = 20_000, 32, 10
    centres = rng.standard_normal((64, dim)).astype(np.float32)  # clustered, as photo collections are
    x = centres[rng.integers(0, 64, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 3 + 5  # ids are not positions
    index = indexes.build_index(kind, dim, ids, x, **params)
    allowed_rows = np.sort(rng.choice(n, size=max(k, int(n * selectivity)), replace=False))
    mask = allowed_mask(ids[allowed_rows])
    q = x[rng.integers(0, n, 3)] + 0.2 * rng.standard_normal((3, dim)).astype(np.float32)
    truth = ids[allowed_rows][np.argsort(-(q @ x[allowed_rows].T), axis=1)[:, :k]]
    for strategy in ("prefilter", "postfilter"):
        view = FilteredIndex(index, mask, strategy=strategy, exact=lambda r: x[(r - 5) // 3])
        scores, found = view.search(q, k)
        assert (found >= 0).all(), (strategy, found)  # k hits: k pass
        assert np.isin(found, ids[allowed_rows]).all()  # only allowed ones
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())])
        if kind == "flat":  # exhaustive: exact (float16: within its rounding)
            assert recall >= (1.0 if not params else 0.9), (strategy, recall)
        elif strategy == "prefilter":  # IVF scans nprobe / selectivity cells: as good as unfiltered
            assert recall >= 0.8, (strategy, recall)
        # (IVF searched wider finds k, but at low selectivity not the best k: the prefilter's reason)


def test_auto_strategy_follows_the_selectivity():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 8)).astype(np.float32)
    index = indexes.build_index("flat", 8, np.arange(2000), x)
    few = FilteredIndex(index, allowed_mask(np.arange(10), 2000))
    many = FilteredIndex(index, allowed_mask(np.arange(1900), 2000))
    few.search(x[:1], 5)
    many.search(x[:1], 5)
    assert few.used.startswith("prefilter") and many.used.startswith("postfilter")


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_search_with_date_and_folder_filters(photo_tree, library_dir, tiny_model):
    root, beach, city, undated = photo_tree
    r = pixquery("index", root, "-L", library_dir, "-m", tiny_model)
    assert r.returncode == 0, r.stderr
    r = pixquery(
        "search",
        "beach",
        "-L",
        library_dir,
        "-m",
        tiny_model,
        "--after",
        "2019-06",
        "--before",
        "2019-09",
        "--in",
        root / "beach",
        "--json",
        "-k",
        "50",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {Path(x["path"]).name for x in out["results"]} == {p.name for p in beach}
    assert all("2019-06" <= x["taken"] < "2019-09" for x in out["results"])
    assert out["filters"]["after"] == "2019-06"
    # plain lines: the path stays the 4th field, the date is the 5th
    r = pixquery("search", "beach", "-L", library_dir, "-m", tiny_model, "--in", root / "city", "--sort", "date")
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [Path(row[3]).parent.name for row in rows] == ["city"] * 6
    assert [row[4] for row in rows] == sorted(row[4] for row in rows)
    # a bad value: one line naming it, exit 2, no traceback
    r = pixquery("search", "beach", "-L", library_dir, "-m", tiny_model, "--after", "last summer")
    assert r.returncode == 2 and "after must be a date" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.milvus
def test_filters_on_a_milvus_index_pass_an_expression_and_keep_exactly_what_passes(photo_tree, library_dir, tiny_model):
    """Milvus evaluates media and date itself (its `taken` field now holds the date taken); the rest
    (folder below an indexed one, camera, place) is applied to its hits."""
    root, beach, city, undated = photo_tree
    with Library.open(library_dir, model=str(tiny_model)) as lib:
        lib.index([root], workers=1, index="milvus", index_params={"index_type": "FLAT"})
        index, row = lib._index()
        assert index.kind == "milvus"
        # the collection's date field is the EXIF date, not the file's mtime
        assert (
            index.count(
                f"taken >= {int(metadata.wall_seconds(datetime(2019, 6, 1)))} and "
                f"taken < {int(metadata.wall_seconds(datetime(2019, 9, 1)))}"
            )
            == 9
        )
        summer = lib.search("x", k=50, after="2019-06", before="2019-09", folders=[root / "beach"])
        assert _paths(summer) == {p.name for p in beach}
        assert _paths(lib.search("x", k=2, camera="pixel")) <= {p.name for p in city}
        assert len(lib.search("x", k=2, camera="pixel")) == 2
        assert _paths(lib.search("x", k=50, before="2019-06")) == {"c0.jpg", "c2.jpg", "c4.jpg"}
        # an older library: no metadata rows, and the collection's date field was the mtime then
        summer_expr = (
            f"taken >= {int(metadata.wall_seconds(datetime(2019, 6, 1)))} and "
            f"taken < {int(metadata.wall_seconds(datetime(2019, 9, 1)))}"
        )
        with lib.catalog.transaction():
            lib.catalog.db.execute("DELETE FROM media_meta")
        lib.reindex()  # rebuilt from stored vectors: no metadata, so the mtimes go in
        index, row = lib._index()
        assert index.count(summer_expr) == 3  # only the undated photos, whose mtime is 2019-07-01
        report = lib.index(workers=1)
        assert report.indexed == 0  # the rescan re-adds the stored vectors with their dates, embeds nothing
        index, row = lib._index()
        assert index.count(summer_expr) == 9
        assert _paths(lib.search("x", k=50, after="2019-06", before="2019-09", folders=[root / "beach"])) == {
            p.name for p in beach
        }


def test_photos_found_by_their_text_pass_the_same_filter(indexed):
    """The text side of a search (OCR hits are photo ids) is filtered by Catalog.image_ids_passing,
    which must agree with the index-side filter_refs."""
    lib, root, beach, city, undated = indexed
    cat = lib.catalog
    ids = {Path(r.path).name: r.image_id for r in lib.search("x", k=50)}
    every = list(ids.values())
    for flt in (
        Filter.parse(after="2019-06", before="2019-09"),
        Filter.parse(folders=[root / "city"]),
        Filter.parse(camera="canon"),
        Filter.parse(near=f"{SYDNEY[0]},{SYDNEY[1]}", within=1),
        Filter.parse(media="video"),
    ):
        passing = {name for name, i in ids.items() if i in cat.image_ids_passing(every, flt)}
        assert passing == _paths(lib.search("x", k=50, filter=flt)), flt
    assert {n for n, i in ids.items() if i in cat.image_ids_passing(every, Filter.parse(camera="canon"))} == {
        p.name for p in beach
    }
