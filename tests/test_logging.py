"""What pixquery logs: a rebuild says why (an index that fails to load is rebuilt from the stored
embeddings, which takes hours at 10^6 vectors: never silently), skipped files, and the CLI's
-v / --log-level wiring the `pixquery` loggers to stderr.

Real library, real index files (damaged on disk), real subprocess for the CLI.
"""

from __future__ import annotations

import logging

from clirun import pixquery
from photos import make_photos


def _damage_index(lib_dir) -> str:
    """Overwrite every data file of the active index (not its manifest) with junk; its path."""
    from pixquery.catalog import Catalog

    with Catalog(lib_dir / "catalog.sqlite") as cat:
        row = cat.active_index(cat.models()[0].id)
    path = lib_dir / row.path
    data = [p for p in path.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert data, list(path.rglob("*"))
    for p in data:
        p.write_bytes(b"not an index" * 10)
    return str(path)


def test_a_corrupt_index_is_rebuilt_with_a_logged_warning_that_says_why(tmp_path, tiny_model, caplog):
    from pixquery.api import Library

    make_photos(tmp_path / "photos", 5)
    with Library.open(tmp_path / "lib", model=str(tiny_model)) as lib:
        assert lib.index([tmp_path / "photos"]).index.total == 5
    damaged = _damage_index(tmp_path / "lib")
    caplog.set_level(logging.INFO, logger="pixquery")
    with Library.open(tmp_path / "lib", model=str(tiny_model)) as lib:
        report = lib.index()
        assert report.indexed == 0 and report.index.rebuilt and report.index.total == 5  # from stored vectors
        assert len(lib.search("a photo", k=10)) == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "pixquery.ingest.sync"]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    message = warnings[0].getMessage()
    assert message.startswith(f"{damaged}: cannot load the ") and "rebuilding it from the stored embeddings" in message
    reason = message.split("index (", 1)[1].rsplit(");", 1)[0]
    assert reason.strip(), message  # the loader's own words, not just "failed"
    assert any(r.name == "pixquery.ingest.sync" and "building a new " in r.getMessage() for r in caplog.records)


def test_a_missing_index_file_is_logged_when_rebuilt(tmp_path, tiny_model, caplog):
    import shutil

    from pixquery.api import Library

    make_photos(tmp_path / "photos", 3)
    with Library.open(tmp_path / "lib", model=str(tiny_model)) as lib:
        lib.index([tmp_path / "photos"])
        shutil.rmtree(tmp_path / "lib" / "indexes")
        caplog.set_level(logging.WARNING, logger="pixquery")
        assert lib.index().index.rebuilt
    assert any("the index file is missing; rebuilding it" in r.getMessage() for r in caplog.records)


def test_cli_logs_to_stderr_warnings_by_default_and_more_with_v(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    make_photos(photos, 4)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    lib = tmp_path / "lib"
    r = pixquery("index", photos, "-L", lib, "-m", tiny_model)
    assert r.returncode == 1 and "broken.jpg" in r.stdout + r.stderr
    assert "INFO" not in r.stderr  # warnings only by default
    damaged = _damage_index(lib)
    # default level: the rebuild's warning, with the file and the reason, one line on stderr
    r = pixquery("index", "-L", lib, "-m", tiny_model)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("WARNING pixquery.ingest.sync: ")]
    assert len(lines) == 1 and damaged in lines[0] and "cannot load" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    # -v: what happens at info too (here: the skipped file, and the index build)
    (photos / "broken2.jpg").write_bytes(b"junk")
    r = pixquery("-v", "index", "-L", lib, "-m", tiny_model)
    assert "INFO pixquery.api: skipped " in r.stderr and "broken2.jpg" in r.stderr, r.stderr
    r = pixquery("--log-level", "error", "info", "-L", lib)
    assert r.returncode == 0 and r.stderr == ""
    r = pixquery("--log-level", "loud", "info", "-L", lib)
    assert r.returncode == 2 and "log level must be one of debug, info, warning, error" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
