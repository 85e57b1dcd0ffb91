"""kill -9 during `pixquery index`, at several points, then re-run: the library is consistent.

Points: while embedding (once the catalog shows 4, 28 or 44 of the 60 photos committed), right
after a batch commit, after the new index file is written but before the catalog points at it,
and after the commit before the old file is removed.
"""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from clirun import pixquery
from photos import make_photos


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash-photos")
    make_photos(folder, 60, size=(256, 200))
    return folder


def check_consistent(lib_dir, n_expected):
    db = sqlite3.connect(lib_dir / "catalog.sqlite")
    images = db.execute("SELECT COUNT(*) FROM image WHERE deleted = 0").fetchone()[0]
    dup = db.execute(
        "SELECT COUNT(*) FROM (SELECT image_id FROM index_image GROUP BY index_id, image_id HAVING COUNT(*) > 1)"
    ).fetchone()[0]
    orphans = db.execute(
        "SELECT COUNT(*) FROM index_image ii LEFT JOIN image i ON i.id = ii.image_id WHERE i.id IS NULL"
    ).fetchone()[0]
    active = db.execute('SELECT id, path FROM "index" WHERE active = 1').fetchall()
    entries = db.execute("SELECT COUNT(*) FROM index_image WHERE index_id = ?", (active[0][0],)).fetchone()[0]
    db.close()
    assert (images, dup, orphans, len(active), entries) == (n_expected, 0, 0, 1, n_expected)
    files = sorted(p.name for p in (lib_dir / "indexes").iterdir())
    assert files == [active[0][1].split("/")[-1]]  # exactly the live index file, no leftovers


@pytest.mark.parametrize("failpoint", ["after_batch_commit:3", "before_index_commit", "after_index_commit"])
def test_kill_at_failpoint_then_resume(photo_dir, tmp_path, tiny_model, failpoint):
    lib = tmp_path / "lib"
    # a first complete run on part of the photos, so that there is something to lose
    first = sorted(photo_dir.glob("*.jpg"))[:20]
    r = pixquery("index", *first, "-L", lib, "-m", tiny_model, "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    r = pixquery(
        "index", photo_dir, "-L", lib, "-m", tiny_model, "--batch-size", "8", env={"PIXQUERY_FAILPOINT": failpoint}
    )
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    # what was indexed before is still searchable right after the crash
    r = pixquery("search", "x", "-L", lib, "-m", tiny_model, "-k", "100", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["results"]) >= 20
    r = pixquery("index", photo_dir, "-L", lib, "-m", tiny_model, "--batch-size", "8", "--json")
    assert r.returncode == 0, r.stderr
    check_consistent(lib, 60)
    # the first 20 were not embedded again after any crash point
    assert json.loads(r.stdout)["indexed"] <= 40


def _embedded(catalog) -> int:
    """Photos embedded so far, read beside the running indexer (WAL: readers never block it)."""
    try:
        db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM embedding").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:  # not created yet, or its schema not written yet
        return 0


# the first batch, the middle, the last third (at 52 a busy machine let the run finish before the kill)
@pytest.mark.parametrize("kill_after", [4, 28, 44])
def test_kill_mid_run_then_resume(photo_dir, tmp_path, tiny_model, kill_after):
    lib = tmp_path / "lib"
    cmd = [
        sys.executable,
        "-m",
        "pixquery.cli",
        "index",
        str(photo_dir),
        "-L",
        str(lib),
        "-m",
        str(tiny_model),
        "--batch-size",
        "4",
        "-q",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Kill when the catalog shows `kill_after` photos committed: a known point, not a guessed time.
    deadline = time.monotonic() + 120
    seen = 0
    while proc.poll() is None and time.monotonic() < deadline:
        seen = _embedded(lib / "catalog.sqlite")
        if seen >= kill_after:
            break
        time.sleep(0.005)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert alive and proc.returncode == -signal.SIGKILL, (
        f"the run ended ({proc.returncode}) before {kill_after} were embedded"
    )
    kept = _embedded(lib / "catalog.sqlite")
    assert kill_after <= seen <= kept < 60  # killed mid-run, and every batch committed before the kill is kept
    r = pixquery("index", photo_dir, "-L", lib, "-m", tiny_model, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["indexed"] == 60 - kept  # the re-run embeds only what the killed run had not
    check_consistent(lib, 60)
    r = pixquery("search", "x", "-L", lib, "-k", "100", "--json")
    assert len(json.loads(r.stdout)["results"]) == 60
