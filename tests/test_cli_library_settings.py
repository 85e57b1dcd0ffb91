"""What a library remembers (its model and precision) and how `index` exits on files that stay
broken, through the real command in a subprocess."""

import json
import os

import pytest

from clirun import pixquery
from photos import make_photos


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    make_photos(folder, 5)
    return folder


def test_an_int8_library_is_searched_and_rescanned_in_int8(photos, tmp_path, tiny_model):
    lib = tmp_path / "lib"
    r = pixquery("index", photos, "-L", lib, "-m", tiny_model, "--precision", "int8")
    assert r.returncode == 0, r.stderr
    r = pixquery("search", "a dog", "-L", lib, "--json")  # no --precision: the library's
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["results"]) == 5
    info = json.loads(pixquery("info", "-L", lib, "--json").stdout)
    assert info["precision"] == "int8"
    assert len(info["models"]) == 1  # nothing was embedded in fp32 behind the user's back
    r = pixquery("index", "-L", lib, "--json")  # a plain rescan stays int8: nothing to re-embed
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["indexed"] == 0
    r = pixquery("index", "-L", lib, "--precision", "fp32", "--json")  # switching is explicit
    assert json.loads(r.stdout)["indexed"] == 5
    assert json.loads(pixquery("info", "-L", lib, "--json").stdout)["precision"] == "fp32"
    r = pixquery("index", "-L", lib, "--precision", "fp16")
    assert r.returncode == 2 and "precision" in r.stderr and "Traceback" not in r.stderr


def test_a_file_that_stays_broken_fails_the_run_once(photos, tmp_path, tiny_model):
    lib = tmp_path / "lib"
    bad = photos / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = pixquery("index", photos, "-L", lib, "-m", tiny_model, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert [f["path"] for f in out["failed"]] == [str(bad)] and out["new_failures"] == 1
    # cron runs the same command again: still reported, but nothing new failed
    r = pixquery("index", "-L", lib)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken.jpg" in r.stdout and "failed before" in r.stdout
    # the file changes and is still broken: that is news
    bad.write_bytes(b"\xff\xd8\xff\xe0 still not a jpeg, longer")
    os.utime(bad, ns=(10**18, 10**18))
    assert pixquery("index", "-L", lib).returncode == 1
    # fixed: forgotten, so breaking it again later counts as new
    bad.unlink()
    assert pixquery("index", "-L", lib).returncode == 0
    bad.write_bytes(b"broken again")
    assert pixquery("index", "-L", lib).returncode == 1
