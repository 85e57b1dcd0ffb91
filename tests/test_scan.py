"""Scanning folders: what is new, changed, unchanged or gone, safely."""

import os

from photos import make_photos
from pixquery.ingest.scan import IMAGE_EXTENSIONS, scan, walk


def test_new_changed_unchanged_deleted(tmp_path):
    files = make_photos(tmp_path / "p", 4)
    first = scan([str(tmp_path / "p")], {})
    assert len(first.to_embed) == 4 and first.found == 4
    known = {e.path: (i, e.size, e.mtime_ns) for i, e in enumerate(first.to_embed)}
    os.utime(files[0], ns=(1, 1))  # changed
    files[1].unlink()  # deleted
    second = scan([str(tmp_path / "p")], known)
    assert [e.path for e in second.to_embed] == [str(files[0])]
    assert len(second.unchanged) == 2
    assert second.deleted == [known[str(files[1])][0]]


def test_symlink_loop_terminates_and_files_counted_once(tmp_path):
    make_photos(tmp_path / "p" / "a", 2)
    os.symlink(tmp_path / "p", tmp_path / "p" / "a" / "loop")
    os.symlink(tmp_path / "p" / "a", tmp_path / "p" / "again")
    errors = []
    found = list(walk(str(tmp_path / "p"), IMAGE_EXTENSIONS, errors))
    assert len(found) == 2


def test_unreadable_folder_does_not_delete_what_is_known(tmp_path):
    files = make_photos(tmp_path / "p" / "sub", 2)
    known = {str(f): (i, f.stat().st_size, f.stat().st_mtime_ns) for i, f in enumerate(files)}
    missing_root = scan([str(tmp_path / "gone")], {str(tmp_path / "gone" / "x.jpg"): (7, 1, 1)})
    assert missing_root.deleted == [] and missing_root.errors
    os.rename(tmp_path / "p" / "sub", tmp_path / "p" / "sub2")
    os.symlink(tmp_path / "nowhere", tmp_path / "p" / "sub")  # dangling: like an unmounted disk
    res = scan([str(tmp_path / "p")], known)
    assert any("broken symbolic link" in r for _, r in res.errors)
    assert res.deleted == []  # the files behind the dangling link are kept
    assert len(res.to_embed) == 2  # and the moved copies are found at their new place


def test_hidden_and_non_image_files_skipped(tmp_path):
    make_photos(tmp_path / "p", 1)
    (tmp_path / "p" / ".hidden").mkdir()
    make_photos(tmp_path / "p" / ".hidden", 1)
    (tmp_path / "p" / "notes.txt").write_text("x")
    assert scan([str(tmp_path / "p")], {}).found == 1
