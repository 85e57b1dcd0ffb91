"""`pixquery duplicates` and search's collapse: planted exact copies and resized / recompressed
copies of photos, found by the real command in a subprocess, on a library indexed with the tiny
random-weight model.

The tiny model's embeddings are not semantic, so its distances are not CLIP's: each library's
threshold is calibrated here from the embeddings it stored (the largest distance inside a planted
group and the smallest between photos of different groups, which must not overlap) and the command
runs at the midpoint. Measured on 60 ImageNet photos with the tiny ViT model (docs/duplicates.md):
resized / recompressed copies 0.003-0.035, different photos 0.039 and more.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clirun import pixquery
from conftest import shared_data
from photos import make_photos

OLD, NEW = 1_600_000_000, 1_700_000_000  # mtimes: originals 2020, copies 2023


def _plant(folder: Path, originals: list[Path]) -> dict[str, set[str]]:
    """Copies of the first three originals (in copies/, named after them, so a longer path): exact,
    resized + recompressed, recompressed, re-saved as PNG. Returns the planted groups, name -> paths."""
    copies = folder / "copies"
    copies.mkdir()
    d0, d1, d2 = originals[:3]
    exact, half, q40, png = (
        copies / f"{d0.stem}_copy.jpg",
        copies / f"{d1.stem}_half.jpg",
        copies / f"{d1.stem}_q40.jpg",
        copies / f"{d2.stem}_resaved.png",
    )
    shutil.copyfile(d0, exact)
    im1 = Image.open(d1).convert("RGB")
    im1.resize((im1.width // 2, im1.height // 2), Image.LANCZOS).save(half, quality=70)
    im1.save(q40, quality=40)
    Image.open(d2).convert("RGB").save(png)
    for p in originals:
        os.utime(p, (OLD, OLD))
    for p in copies.iterdir():
        os.utime(p, (NEW, NEW))
    return {"exact": {str(d0), str(exact)}, "resized": {str(d1), str(half), str(q40)}, "png": {str(d2), str(png)}}


def _calibrate(library: Path, model: Path, planted: dict[str, set[str]]) -> float:
    """The midpoint between the farthest planted copy and the nearest different photo."""
    from pixquery.api import Library
    from pixquery.search import angular_distance

    with Library.open(library, model=str(model), create=False) as lib:
        row = lib.catalog.model_by_fingerprint(lib.encoder.fingerprint)
        ids, vectors = lib.catalog.photo_embeddings(row.id, row.dim)
        paths = [lib.catalog.image(int(i)).path for i in ids]
    group_of = {p: name for name, ps in planted.items() for p in ps}
    within, between = [], []
    for a in range(len(paths)):
        for b in range(a + 1, len(paths)):
            d = angular_distance(float(vectors[a] @ vectors[b]))
            ga, gb = group_of.get(paths[a], paths[a]), group_of.get(paths[b], paths[b])
            (within if ga == gb else between).append(d)
    assert max(within) < min(between), f"the tiny model does not separate these copies: {max(within)} vs {min(between)}"
    return (max(within) + min(between)) / 2


@pytest.fixture(scope="module", params=["synthetic", "real"])
def planted_library(request, tmp_path_factory, tiny_model):
    """(library, photos folder, planted groups, calibrated threshold): synthetic photos
    (tests/photos.py) or six real ImageNet photos from ../shared (skipped where absent)."""
    root = tmp_path_factory.mktemp(f"dups-{request.param}")
    folder = root / "photos"
    if request.param == "synthetic":
        originals = make_photos(folder, 6, size=(320, 240))
    else:
        source = sorted((shared_data("imagenet-sample-images") / "images").glob("*.JPEG"))[:6]
        folder.mkdir()
        originals = [Path(shutil.copyfile(p, folder / p.name)) for p in source]
    planted = _plant(folder, originals)
    library = root / "library"
    r = pixquery("index", folder, "-L", library, "-m", tiny_model, "-q")
    assert r.returncode == 0, r.stderr
    return library, folder, planted, _calibrate(library, tiny_model, planted)


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_finds_planted_exact_and_near_copies(planted_library, tiny_model):
    library, folder, planted, threshold = planted_library
    before = _files(folder)
    r = pixquery("duplicates", "-L", library, "-m", tiny_model, "--threshold", threshold, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    found = [{m["path"] for m in g["members"]} for g in data["groups"]]
    assert sorted(found, key=sorted) == sorted(planted.values(), key=sorted)
    assert [g["count"] for g in data["groups"]] == [3, 2, 2]  # largest group first
    by_paths = {frozenset(m["path"] for m in g["members"]): g for g in data["groups"]}
    assert by_paths[frozenset(planted["exact"])]["kind"] == "exact"
    assert by_paths[frozenset(planted["resized"])]["kind"] == "near"
    assert by_paths[frozenset(planted["png"])]["kind"] == "near"
    assert data["threshold"] == pytest.approx(threshold) and data["photos"] == 10 and data["duplicates"] == 4
    for g in data["groups"]:
        keep = g["members"][0]
        assert keep["keep"] and keep["path"] == g["keep"] and keep["distance"] == 0.0
        assert all(0.0 <= m["distance"] <= threshold * 2 for m in g["members"])  # single linkage: at most 2 hops
        assert all(not m["keep"] for m in g["members"][1:])
        # the default rule, largest: the most pixels, then the biggest file; so never the half-size copy
        assert keep["width"] * keep["height"] == max(m["width"] * m["height"] for m in g["members"])
    assert by_paths[frozenset(planted["resized"])]["keep"] == min(planted["resized"], key=len)  # the original
    assert _files(folder) == before  # nothing deleted, moved or touched


def test_keep_rules(planted_library, tiny_model):
    library, folder, planted, threshold = planted_library
    originals = {min(ps, key=lambda p: "copies" in p) for ps in planted.values()}

    def kept(rule):
        r = pixquery("duplicates", "-L", library, "-m", tiny_model, "-t", threshold, "--keep", rule, "--json")
        assert r.returncode == 0, r.stderr
        return {g["keep"] for g in json.loads(r.stdout)["groups"]}

    assert kept("oldest") == originals
    assert kept("shortest-path") == originals
    newest = kept("newest")
    assert not newest & originals and all("/copies/" in p for p in newest)


def test_exact_only_and_piped_lines(planted_library, tiny_model):
    library, _, planted, threshold = planted_library
    r = pixquery("duplicates", "-L", library, "-m", tiny_model, "--exact-only", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [{m["path"] for m in g["members"]} for g in data["groups"]] == [planted["exact"]]
    assert data["near"] is False and all(m["same_content_as_keep"] for m in data["groups"][0]["members"])

    r = pixquery("duplicates", "-L", library, "-m", tiny_model, "-t", threshold, "--limit", "1")
    assert r.returncode == 0, r.stderr
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert len(lines) == 3 and all(len(f) == 8 for f in lines)  # the group of three only
    assert [f[2] for f in lines] == ["keep", "copy", "copy"] and {f[7] for f in lines} == planted["resized"]
    assert lines[0][3] == "0.0000" and float(lines[1][3]) <= float(lines[2][3])
    assert "3 groups (first 1 shown), 4 copies" in r.stderr and "Nothing was deleted" in r.stderr


def test_search_collapses_near_duplicates(planted_library, tiny_model):
    library, folder, planted, threshold = planted_library
    query = min(planted["resized"], key=len)
    plain = pixquery("search", "--image", query, "-k", "4", "-L", library, "-m", tiny_model, "--json")
    assert plain.returncode == 0, plain.stderr
    top = [r["path"] for r in json.loads(plain.stdout)["results"]]
    assert set(top[:3]) == planted["resized"]  # the three copies fill the top of the page

    r = pixquery(
        "search",
        "--image",
        query,
        "-k",
        "4",
        "-L",
        library,
        "-m",
        tiny_model,
        "--json",
        "--collapse",
        "--collapse-threshold",
        threshold,
    )
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)["results"]
    assert len(results) == 4 and [x["rank"] for x in results] == [1, 2, 3, 4]
    assert results[0]["path"] == query and set(results[0]["duplicates"]) == planted["resized"] - {query}
    assert not {x["path"] for x in results[1:]} & planted["resized"]

    from pixquery.api import Library

    with Library.open(library, model=str(tiny_model), create=False) as lib:
        folded = lib.search(image=query, k=4, collapse=threshold)
        assert [x.path for x in folded] == [x["path"] for x in results]
        assert [x.path for x in lib.search(image=query, k=4)] == top
        assert lib.search(image=query, k=4, collapse=0.0)[0].duplicates is None  # no copy is that close


def test_bad_options_are_one_line(planted_library, tmp_path, tiny_model):
    library = planted_library[0]
    for args, message in (
        (("--keep", "biggest"), "--keep must be one of largest, oldest, newest, shortest-path"),
        (("--threshold", "1.5"), "angular distance between 0 and 1"),
        (("--limit", "-1"), "--limit must be 0 or more"),
    ):
        r = pixquery("duplicates", "-L", library, "-m", tiny_model, *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = pixquery("duplicates", "-L", tmp_path / "nowhere")
    assert r.returncode == 2 and "no library at" in r.stderr and not (tmp_path / "nowhere").exists()
    r = pixquery("search", "x", "-L", library, "-m", tiny_model, "--collapse-threshold", "0.1")
    assert r.returncode == 2 and "--collapse-threshold goes with --collapse" in r.stderr


# -- the parts, without a library -----------------------------------------------------------------


def _vectors_with_pairs(n=3000, pairs=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = rng.choice(n, size=pairs, replace=False)
    b = (a + n // 2) % n
    keep = ~np.isin(b, a)
    a, b = a[keep], b[keep]
    x[b] = x[a] + 0.01 * rng.standard_normal((len(a), 64)).astype(np.float32)
    x[b] /= np.linalg.norm(x[b], axis=1, keepdims=True)
    return x, {(min(i, j), max(i, j)) for i, j in zip(a.tolist(), b.tolist())}


def test_range_search_ivf_finds_what_exact_finds():
    from pixquery.duplicates import near_pairs

    x, planted = _vectors_with_pairs()
    exact_i, exact_j, method = near_pairs(x, 0.05)
    assert method == "exact"
    exact = set(zip(exact_i.tolist(), exact_j.tolist()))
    assert planted <= exact and all(i < j for i, j in exact)
    seen = []
    ivf_i, ivf_j, method = near_pairs(x, 0.05, exact_max=100, nprobe=4, progress=lambda d, t: seen.append((d, t)))
    assert method.startswith("ivf nlist=") and "nprobe=4" in method
    ivf = set(zip(ivf_i.tolist(), ivf_j.tolist()))
    assert ivf <= exact and len(ivf & planted) >= 0.95 * len(planted)
    assert seen[-1] == (2 * len(x), 2 * len(x))  # placed in cells, then searched


def test_groups_are_connected_components_largest_first():
    from pixquery.duplicates import connected_groups, group_ids

    groups = connected_groups(7, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert sorted(map(sorted, (g.tolist() for g in groups))) == [[0, 1, 2], [4, 5]]
    # image ids 10..14 with embeddings; 99 has none but shares its bytes with 14
    ids = group_ids(np.array([10, 11, 12, 13, 14]), np.array([0]), np.array([1]), [[14, 99]])
    assert sorted(map(sorted, ids)) == [[10, 11], [14, 99]]


def test_keep_order_rules():
    from pixquery.duplicates import Member, make_group

    a = Member(1, "/p/a_long_name.jpg", 500, 100, 100, 10.0, "x")
    b = Member(2, "/p/b.jpg", 900, 50, 50, 20.0, "y")
    c = Member(3, "/p/sub/c.jpg", 400, 100, 100, 5.0, "x")
    v = {1: np.array([1.0, 0.0], np.float32), 2: np.array([0.6, 0.8], np.float32), 3: np.array([1.0, 0.0], np.float32)}

    def keep(rule):
        return make_group([Member(**vars(m)) for m in (a, b, c)], v, rule)

    assert keep("largest").keep.image_id == 1  # 100x100 beats 50x50; then the bigger file
    assert keep("oldest").keep.image_id == 3 and keep("newest").keep.image_id == 2
    g = keep("shortest-path")
    assert g.keep.image_id == 2 and g.kind == "near"
    assert [m.image_id for m in keep("oldest").members] == [3, 1, 2]  # then by distance to the kept one
    assert keep("oldest").members[1].same_content_as_keep and keep("oldest").members[1].distance == 0.0
    with pytest.raises(Exception, match="--keep must be one of"):
        keep("biggest")


def test_http_api_duplicates_and_collapse(planted_library, tmp_path, tiny_model):
    from test_server_support import running_server

    library, _, planted, threshold = planted_library
    with (
        running_server(
            library, tiny_model, tmp_path / "server.log", extra=("--duplicate-threshold", f"{threshold:.6f}")
        ) as served,
        served.client() as c,
    ):
        r = c.get("/api/duplicates")
        assert r.status_code == 200, r.text
        data = r.json()
        assert sorted(({m["path"] for m in g["members"]} for g in data["groups"]), key=sorted) == sorted(
            planted.values(), key=sorted
        )
        assert data["threshold"] == pytest.approx(threshold, abs=1e-6) and data["next_offset"] is None
        member = data["groups"][0]["members"][0]
        assert member["keep"] and c.get(member["thumbnail"]).headers["content-type"] == "image/jpeg"
        assert member["modified"].startswith("2020-")  # the original's date (mtime)

        page = c.get("/api/duplicates", params={"limit": 1, "offset": 1, "keep": "newest"}).json()
        assert len(page["groups"]) == 1 and page["next_offset"] == 2 and page["keep_rule"] == "newest"
        assert "/copies/" in page["groups"][0]["keep"]
        exact = c.get("/api/duplicates", params={"exact_only": "true"}).json()
        assert exact["near"] is False and [g["kind"] for g in exact["groups"]] == ["exact"]
        tight = c.get("/api/duplicates", params={"threshold": 0}).json()  # only identical embeddings left
        assert all(m["distance"] == 0.0 for g in tight["groups"] for m in g["members"])
        for bad in ({"keep": "biggest"}, {"threshold": 2}, {"limit": 0}):
            r = c.get("/api/duplicates", params=bad)
            assert r.status_code == 422 and r.json()["status"] == 422, (bad, r.text)

        query = min(planted["resized"], key=len)
        image_id = next(m["image_id"] for g in data["groups"] for m in g["members"] if m["path"] == query)
        plain = c.get("/api/search", params={"q": "a photo", "k": 20}).json()["results"]
        folded = c.get("/api/search", params={"q": "a photo", "k": 20, "collapse": "true"}).json()["results"]
        assert len(plain) == 10 and len(folded) == 6
        assert sorted(len(x.get("duplicates") or []) for x in folded) == [0, 0, 0, 1, 1, 2]
        by_image = c.get(
            "/api/search", params={"image_id": image_id, "collapse": "true", "collapse_threshold": 0}
        ).json()
        assert not any(x.get("duplicates") for x in by_image["results"] if x["path"] in planted["resized"])
        assert c.get("/api/search", params={"q": "x", "collapse_threshold": 3}).status_code == 422


def test_members_are_dated_by_when_taken_when_the_file_says():
    from types import SimpleNamespace

    from pixquery.duplicates import _member

    row = SimpleNamespace(id=1, path="/p/a.jpg", size=10, width=4, height=3, mtime_ns=1_700_000_000 * 10**9, sha256="x")
    taken = _member(row, {"taken": 1_500_000_000.0, "taken_source": "exif"})
    assert taken.date == 1_500_000_000.0 and taken.date_source == "taken" and taken.mtime == 1_700_000_000.0
    assert taken.to_dict()["date_iso"] == "2017-07-14T02:40:00"  # wall clock where taken: no zone
    for meta in (None, {"taken": 1_700_000_000.0, "taken_source": "mtime"}, {"taken": None, "taken_source": None}):
        m = _member(row, meta)
        assert m.date == 1_700_000_000.0 and m.date_source == "modified"
        assert m.to_dict()["date_iso"].endswith("+00:00")
