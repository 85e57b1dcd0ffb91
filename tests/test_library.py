"""The main job end to end through the Python API, with the tiny random-weight model.

Random weights give meaningless rankings, so these tests check plumbing that must hold for any
weights: the right files are found, ids map back to the right paths, an image finds itself,
incremental runs equal fresh builds, nothing is re-embedded needlessly.
"""

import math
import os
import shutil

import numpy as np
import pytest

from photos import BAD, awkward_files, make_photos, photo
from pixquery.api import Library
from pixquery.errors import LibraryError, PixqueryError


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    make_photos(folder, 10)
    make_photos(folder / "trip", 6, start_seed=100, size=(500, 300))
    return folder


def _lib(path, model):
    return Library.open(path, model=str(model))


def test_index_then_search_by_text(photos, library_dir, tiny_model):
    lib = _lib(library_dir, tiny_model)
    report = lib.index([photos])
    assert (report.found, report.indexed, report.skipped, report.failed) == (16, 16, 0, [])
    assert report.index.total == 16
    results = lib.search("a red sports car", k=5)
    assert len(results) == 5
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert r.path.startswith(str(photos)) and os.path.exists(r.path)
        assert r.distance == pytest.approx(math.acos(r.score) / math.pi, abs=1e-6)
    # k larger than the library returns everything once
    everything = lib.search("anything", k=100)
    assert len(everything) == 16 and len({r.path for r in everything}) == 16


def test_image_query_finds_itself_first(photos, library_dir, tiny_model):
    lib = _lib(library_dir, tiny_model)
    lib.index([photos])
    target = sorted(photos.glob("trip/*.jpg"))[2]
    results = lib.search(image=target, k=3)
    assert results[0].path == str(target)
    assert results[0].score > 0.999
    by_id = lib.search(image_id=results[0].image_id, k=3)
    assert str(target) not in [r.path for r in by_id]  # "more like this" leaves the photo itself out


def test_awkward_files_reported_and_good_ones_indexed(tmp_path, library_dir, tiny_model):
    files = awkward_files(tmp_path / "awkward")
    lib = _lib(library_dir, tiny_model)
    report = lib.index([tmp_path / "awkward"])
    failed = dict(report.failed)
    assert set(failed) == {str(files[c]) for c in BAD}
    assert all(failed.values())
    assert report.indexed == len(files) - len(BAD)
    assert lib.info()["images"] == report.indexed


def test_incremental_equals_fresh_build(photos, tmp_path, tiny_model):
    lib = _lib(tmp_path / "inc", tiny_model)
    lib.index([photos])
    # change the collection: 2 new, 1 modified, 2 deleted
    make_photos(photos / "new", 2, start_seed=500)
    changed = sorted(photos.glob("*.jpg"))[0]
    photo(seed=777).save(changed)
    os.utime(changed, ns=(10**18, 10**18))
    for p in sorted(photos.glob("trip/*.jpg"))[:2]:
        p.unlink()
    report = lib.index()  # no argument: rescans the known folders
    assert (report.indexed, report.removed) == (3, 2)
    assert report.index.added == 3 and report.index.removed == 3  # the changed one is replaced
    fresh = _lib(tmp_path / "fresh", tiny_model)
    fresh.index([photos])
    assert lib.info()["images"] == fresh.info()["images"] == 16
    rng = np.random.default_rng(0)
    for q in rng.standard_normal((5, lib.encoder.dim)).astype("float32"):
        q /= np.linalg.norm(q)
        a = [(r.path, round(r.score, 5)) for r in lib.search(vector=q, k=16)]
        b = [(r.path, round(r.score, 5)) for r in fresh.search(vector=q, k=16)]
        assert a == b
    # the catalog holds no leftovers of the deleted files
    n = lib.catalog.db.execute("SELECT COUNT(*) FROM image").fetchone()[0]
    assert n == 16
    assert len(list((tmp_path / "inc" / "indexes").iterdir())) == 1


def test_rerun_embeds_nothing_and_reindex_reembeds_nothing(photos, library_dir, tiny_model):
    lib = _lib(library_dir, tiny_model)
    lib.index([photos])
    again = lib.index([photos])
    assert (again.indexed, again.skipped) == (0, 16)
    before = lib.catalog.db.execute("SELECT COUNT(*), SUM(LENGTH(vector)) FROM embedding").fetchone()
    rep = lib.reindex("flat", {"storage": "float16"})
    assert rep.rebuilt and rep.total == 16
    after = lib.catalog.db.execute("SELECT COUNT(*), SUM(LENGTH(vector)) FROM embedding").fetchone()
    assert before == after
    assert lib.info()["models"][0]["index"]["params"]["storage"] == "float16"
    assert lib.search("x", k=3)[0].path


def test_switching_model_keeps_both_embeddings(photos, library_dir, tiny_model, tiny_rn50):
    lib = _lib(library_dir, tiny_model)
    lib.index([photos])
    lib.close()
    other = _lib(library_dir, tiny_rn50)
    assert other.index([photos]).indexed == 16
    other.close()
    back = _lib(library_dir, tiny_model)
    rep = back.index([photos])
    assert rep.indexed == 0  # ViT embeddings were kept
    assert len(back.info()["models"]) == 2
    assert back.search("x", k=2)


def test_threshold(photos, library_dir, tiny_model):
    lib = _lib(library_dir, tiny_model)
    lib.index([photos])
    everything = lib.search("a cat", k=16)
    cut = everything[7].distance
    kept = lib.search("a cat", k=16, threshold=cut)
    assert len(kept) == 8 and kept.dropped == 8
    with pytest.raises(PixqueryError, match="no calibrated threshold"):
        lib.search("a cat", threshold="auto")
    enc = lib.encoder
    lib.catalog.set_threshold(enc.name, enc.fingerprint, cut)
    assert len(lib.search("a cat", k=16, threshold="auto")) == 8
    with pytest.raises(PixqueryError):
        lib.search("a cat", threshold=1.5)


def test_missing_index_file_is_rebuilt_without_reembedding(photos, library_dir, tiny_model):
    lib = _lib(library_dir, tiny_model)
    lib.index([photos])
    shutil.rmtree(library_dir / "indexes")
    lib.close()
    lib = _lib(library_dir, tiny_model)
    with pytest.raises(LibraryError, match="missing"):
        lib.search("x")
    rep = lib.index()
    assert rep.indexed == 0 and rep.index.rebuilt and rep.index.total == 16
    assert len(lib.search("x", k=20)) == 16


def test_second_index_run_is_refused_while_one_holds_the_lock(photos, library_dir, tiny_model):
    lib = _lib(library_dir, tiny_model)
    with lib._write_lock(), pytest.raises(LibraryError, match="another pixquery process"):
        _lib(library_dir, tiny_model).index([photos])


def test_nothing_to_index_and_missing_folder(library_dir, tiny_model, tmp_path):
    lib = _lib(library_dir, tiny_model)
    with pytest.raises(LibraryError, match="nothing to index"):
        lib.index()
    with pytest.raises(LibraryError, match="no such file"):
        lib.index([tmp_path / "nope"])


def test_default_runtime_never_imports_torch(photos, library_dir, tiny_model):
    """Index and search with the ONNX backend in a fresh interpreter: torch stays unloaded."""
    import subprocess
    import sys

    code = (
        "import sys; from pixquery.api import Library\n"
        f"lib = Library.open({str(library_dir)!r}, model={str(tiny_model)!r})\n"
        f"lib.index([{str(photos)!r}]); assert lib.search('a dog', k=3)\n"
        "bad = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_auto_calibrates_on_the_models_text_queries(photos, library_dir, tiny_model):
    """Beyond exact_max, `auto` measures recall on this model's embeddings of everyday text
    queries (pixquery.query_sample), not on random directions."""
    from pixquery.query_sample import QUERIES

    lib = _lib(library_dir, tiny_model)
    lib.index([photos], index="auto", index_params={"exact_max": 8, "sample": 50, "k": 5})
    chosen = lib.info()["models"][0]["index"]["params"]["chosen"]
    assert chosen["queries"] == "text queries" and chosen["n_queries"] == 50 and chosen["n"] == 16
    assert 0 < chosen["recall"] <= 1
    assert len(QUERIES) >= 200 and len(set(QUERIES)) == len(QUERIES)
    assert len(lib.search("a dog", k=5)) == 5
