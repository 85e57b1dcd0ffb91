"""What the scan leaves out: hidden folders and app caches by default, `--exclude GLOB`
(remembered per folder) and .pixqueryignore files, with .gitignore's rules."""

from __future__ import annotations

import json
import sqlite3

from clirun import pixquery
from photos import make_photos, photo
from pixquery.ingest.scan import IMAGE_EXTENSIONS, walk


def _tree(root):
    """name -> path of a photo folder with everything a real disk has in it."""
    files = {}
    for rel in [
        "a.jpg",
        "shot.png",
        "Screenshots/s1.jpg",
        "trip/b.jpg",
        "trip/c.png",
        "trip/keep.png",
        "trip/Screenshots/s2.jpg",
        "trip/raw/r.jpg",
        "top.jpg",
        "trip/top.jpg",
        # skipped by default
        ".hidden/h.jpg",
        "trip/.thumbnails/t.jpg",
        "@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg",
        "#recycle/old.jpg",
        "Catalog Smart Previews.lrdata/0/p.jpg",
        "$RECYCLE.BIN/x.jpg",
        "__MACOSX/m.jpg",
        ".AppleDouble/d.jpg",
        "pixlib/thumbnails/00/1-2-3-256.jpg",
    ]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        photo((64, 48), seed=len(files)).save(p, "PNG" if p.suffix == ".png" else "JPEG")
        files[rel] = p
    (root / "pixlib" / "catalog.sqlite").write_bytes(b"")
    (root / "pixlib" / "indexes").mkdir()
    return files


def _found(root, exclude=()):
    errors = []
    out = {str(e.path)[len(str(root)) + 1 :] for e in walk(str(root), IMAGE_EXTENSIONS, errors, [], exclude)}
    assert errors == []
    return out


def test_hidden_folders_app_caches_and_libraries_are_skipped_by_default(tmp_path):
    _tree(tmp_path)
    assert _found(tmp_path) == {
        "a.jpg",
        "shot.png",
        "Screenshots/s1.jpg",
        "trip/b.jpg",
        "trip/c.png",
        "trip/keep.png",
        "trip/Screenshots/s2.jpg",
        "trip/raw/r.jpg",
        "top.jpg",
        "trip/top.jpg",
    }


def test_exclude_globs_and_pixqueryignore_files_follow_gitignore_rules(tmp_path):
    _tree(tmp_path)
    # no slash: any depth; trailing slash: folders; leading slash: anchored at the indexed folder
    assert _found(tmp_path, ["*.png", "Screenshots/", "/top.jpg"]) == {
        "a.jpg",
        "trip/b.jpg",
        "trip/raw/r.jpg",
        "trip/top.jpg",
    }
    (tmp_path / "trip" / ".pixqueryignore").write_text("# a comment\nraw/\n!keep.png\n")
    # the deeper file wins over --exclude: keep.png comes back; raw/ is anchored at trip/
    assert _found(tmp_path, ["*.png"]) == {
        "a.jpg",
        "Screenshots/s1.jpg",
        "trip/b.jpg",
        "trip/keep.png",
        "trip/Screenshots/s2.jpg",
        "top.jpg",
        "trip/top.jpg",
    }
    (tmp_path / ".pixqueryignore").write_text("trip/\n")  # a folder left out is not entered at all
    assert _found(tmp_path) == {"a.jpg", "shot.png", "Screenshots/s1.jpg", "top.jpg"}
    # a file given by its own path is never left out
    assert len(list(walk(str(tmp_path / "trip" / "c.png"), IMAGE_EXTENSIONS, [], [], ["*.png"]))) == 1


def test_exclude_from_the_cli_is_remembered_per_folder_and_said_in_info(tmp_path, tiny_model):
    photos, other = tmp_path / "photos", tmp_path / "other"
    make_photos(photos, 3)
    make_photos(photos / "Screenshots", 2, start_seed=10)
    make_photos(photos, 2, start_seed=20, ext=".png")
    make_photos(other, 2, start_seed=30, ext=".png")
    lib = tmp_path / "lib"
    r = pixquery(
        "index", photos, "-L", lib, "-m", tiny_model, "--exclude", "*.png", "--exclude", "Screenshots/", "--json"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["indexed"] == 3
    r = pixquery("index", other, "-L", lib, "--json")  # another folder: not excluded by photos' globs
    assert json.loads(r.stdout)["indexed"] == 2
    r = pixquery("info", "-L", lib, "--json")
    info = json.loads(r.stdout)
    assert info["excluded"]["folders"] == {str(photos): ["*.png", "Screenshots/"]}
    assert "@eaDir" in info["excluded"]["by_default"] and info["excluded"]["ignore_file"] == ".pixqueryignore"
    rows = pixquery("info", "-L", lib).stdout.splitlines()  # piped: key<TAB>value lines
    assert "skipped_by_default\t@eaDir" in rows and "ignore_file\t.pixqueryignore" in rows
    assert f'exclude.{photos}\t["*.png", "Screenshots/"]' in rows
    r = pixquery("index", "-L", lib, "--json")  # a plain rescan keeps each folder's globs
    rep = json.loads(r.stdout)
    assert rep["indexed"] == 0 and rep["skipped"] == 5 and rep["found"] == 5
    # new globs replace the old: the screenshots come in, the JPEGs of the top folder leave
    r = pixquery("index", photos, "-L", lib, "--exclude", "/photo_000*.jpg", "--json")
    rep = json.loads(r.stdout)
    assert (rep["indexed"], rep["removed"]) == (4, 3), rep
    paths = {
        row[0] for row in sqlite3.connect(lib / "catalog.sqlite").execute("SELECT path FROM image WHERE deleted = 0")
    }
    assert not any(p.startswith(str(photos / "photo_000")) and p.endswith(".jpg") for p in paths)
    assert str(photos / "Screenshots" / "photo_0010.jpg") in paths
    r = pixquery("search", "a photo", "-L", lib, "-k", "50", "--json")  # gone from the index too
    assert not any(x["path"].startswith(str(photos / "photo_000")) for x in json.loads(r.stdout)["results"])
    # a .pixqueryignore works from the CLI too; --clear-exclude forgets the remembered globs
    (photos / ".pixqueryignore").write_text("Screenshots/\n")
    r = pixquery("index", photos, "-L", lib, "--clear-exclude", "--json")
    rep = json.loads(r.stdout)
    assert (rep["indexed"], rep["removed"]) == (3, 2), rep
    assert "folders" in json.loads(pixquery("info", "-L", lib, "--json").stdout)["excluded"]
    assert json.loads(pixquery("info", "-L", lib, "--json").stdout)["excluded"]["folders"] == {}


def test_bad_exclude_options_are_one_line_errors(tmp_path, tiny_model):
    make_photos(tmp_path / "p", 1)
    for args in (["--exclude", " "], ["--exclude", "*.png", "--clear-exclude"]):
        r = pixquery("index", tmp_path / "p", "-L", tmp_path / "lib", "-m", tiny_model, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "exclude" in r.stderr
