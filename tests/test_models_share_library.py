"""Several models (and precisions) in one library never serve a stale embedding.

Each stored embedding is tied to the file version it was made from; a re-index with any model
refreshes exactly the embeddings whose file changed since that model last saw it. The check after
every step: the library's search for that model equals a fresh build's over the same folder.
"""

import os
import random
import shutil

import numpy as np
import pytest

from photos import make_photos, photo
from pixquery.api import Library
from pixquery.catalog import MIGRATIONS, Catalog


def _vectors_of(lib: Library) -> dict[str, np.ndarray]:
    model = lib._model_row(create=False)
    rows = lib.catalog.db.execute(
        "SELECT i.path, e.vector FROM embedding e JOIN image i ON i.id = e.image_id WHERE e.model_id = ? AND i.deleted = 0",
        (model.id,),
    )
    return {p: np.frombuffer(v, dtype=np.float32) for p, v in rows}


def _assert_same_as_fresh(lib: Library, folder, fresh_root, spec, step):
    model, precision = spec
    fresh_dir = fresh_root / f"fresh-{step}"
    fresh = Library.open(fresh_dir, model=str(model), precision=precision)
    fresh.index([folder])
    try:
        mine, theirs = _vectors_of(lib), _vectors_of(fresh)
        assert sorted(mine) == sorted(theirs), f"step {step}: different photos"
        # int8 runs ONNX Runtime's dynamic quantisation, whose activation scale is taken over the
        # whole batch: the same photo embeds slightly differently beside other photos (cosine
        # > 0.99 here). A stale vector is another photo's (cosine ~0.5 with these photos).
        exact = precision == "fp32"
        for path in theirs:
            cos = float(mine[path] @ theirs[path])
            assert cos > (0.99999 if exact else 0.99), f"step {step}: stale embedding of {path} (cosine {cos:.4f})"
        rng = np.random.default_rng(step)
        queries = list(theirs.values()) + list(rng.standard_normal((3, lib.encoder.dim)).astype("float32"))
        for q in queries:
            q = q / np.linalg.norm(q)
            a = [(r.path, r.score) for r in lib.search(vector=q, k=10)]
            b = [(r.path, r.score) for r in fresh.search(vector=q, k=10)]
            if exact:
                assert [(p, round(s, 5)) for p, s in a] == [(p, round(s, 5)) for p, s in b], f"step {step}"
            else:
                assert sorted(p for p, _ in a) == sorted(p for p, _ in b), f"step {step}"
                np.testing.assert_allclose([s for _, s in sorted(a)], [s for _, s in sorted(b)], atol=0.02)
    finally:
        fresh.close()
        shutil.rmtree(fresh_dir)


@pytest.mark.slow
def test_every_model_and_precision_stays_fresh_through_changes(tmp_path, tiny_model, tiny_rn50):
    folder = tmp_path / "photos"
    make_photos(folder, 4)
    specs = [(tiny_model, "fp32"), (tiny_model, "int8"), (tiny_rn50, "fp32"), (tiny_rn50, "int8")]
    library = tmp_path / "library"
    mtime = [10**18]

    def write(path, seed):
        photo(seed=seed).save(path)
        mtime[0] += 10**9  # a distinct mtime per write, whatever the file system's granularity
        os.utime(path, ns=(mtime[0], mtime[0]))

    def index_with(spec, step):
        with Library.open(library, model=str(spec[0]), precision=spec[1]) as lib:
            lib.index([folder])
            _assert_same_as_fresh(lib, folder, tmp_path, spec, step)

    for n, spec in enumerate(specs):  # every model and precision has embedded the first version
        index_with(spec, n)
    # Then changes, deletions and re-additions between runs of the models, in shuffled orders:
    # each model in turn meets files that others re-embedded, deleted or saw come back.
    rng = random.Random(11)
    deleted: list = []
    step = len(specs)
    for round_ in range(3):
        order = specs[:]
        rng.shuffle(order)
        for spec in order:
            files = sorted(folder.glob("*.jpg"))
            op = ["change", "delete", "readd"][(step + round_) % 3]
            if op == "delete" and len(files) > 2:
                victim = rng.choice(files)
                victim.unlink()
                deleted.append(victim)
            elif op == "readd" and deleted:
                write(deleted.pop(), seed=rng.randrange(1000))
            else:
                write(rng.choice(files), seed=1000 + step)
            index_with(spec, step)
            step += 1


def test_a_change_seen_by_one_model_is_re_embedded_by_the_other(tmp_path, tiny_model, tiny_rn50):
    """The reported case: index A, index B, change a photo, re-index B, then A."""
    folder = tmp_path / "photos"
    paths = make_photos(folder, 3)
    library = tmp_path / "library"
    for model in (tiny_model, tiny_rn50):
        with Library.open(library, model=str(model)) as lib:
            lib.index([folder])
    photo(seed=999).save(paths[0])
    os.utime(paths[0], ns=(10**18, 10**18))
    with Library.open(library, model=str(tiny_rn50)) as lib:
        assert lib.index().indexed == 1
    with Library.open(library, model=str(tiny_model)) as lib:
        report = lib.index()
        assert (report.indexed, report.skipped) == (1, 2)
        hit = lib.search(image=paths[0], k=1)[0]
        assert hit.path == str(paths[0]) and hit.score > 0.999  # the new picture finds itself
        assert lib.index().indexed == 0  # and nothing more to do


def test_upgrade_keeps_single_model_embeddings_and_redoes_unknown_ones(tmp_path, tiny_model, tiny_rn50):
    """Embeddings written before the file version was recorded: with one model they are of the
    image row's version (kept); with several, unknown (re-embedded once by each model)."""
    folder = tmp_path / "photos"
    make_photos(folder, 3)
    for name, models in (("one", [tiny_model]), ("two", [tiny_model, tiny_rn50])):
        library = tmp_path / name
        for model in models:
            with Library.open(library, model=str(model)) as lib:
                lib.index([folder])
        db = Catalog(library / "catalog.sqlite").db  # back to schema 2, as an older pixquery left it
        for column in ("source_size", "source_mtime_ns", "source_sha256"):
            db.execute(f"ALTER TABLE embedding DROP COLUMN {column}")
        for table in ("failure", "shard_loaded", "shard_source"):  # made by migrations 4 and 5
            db.execute(f"DROP TABLE {table}")
        for statement in (
            "DROP TRIGGER text_index_forget",
            "DROP TABLE text_index",
            "DROP TABLE ocr_scan",
            "DROP INDEX detection_text",
            "ALTER TABLE detection DROP COLUMN score",
        ):  # migration 6 (OCR)
            db.execute(statement)
        db.execute("ALTER TABLE folder DROP COLUMN exclude")  # migration 7 (--exclude globs per folder)
        db.execute("DROP TABLE media_meta")  # migration 8 (date taken, GPS, camera)
        for statement in (  # migration 9 (text in video frames)
            "DROP TABLE ocr_video_scan",
            "DROP INDEX detection_video_text",
            "ALTER TABLE detection DROP COLUMN timestamp_end",
        ):
            db.execute(statement)
        db.execute("PRAGMA user_version = 2")
        db.close()
        with Library.open(library, model=str(models[0])) as lib:  # opening migrates it
            assert lib.catalog.version == len(MIGRATIONS)
            assert lib.index().indexed == (0 if name == "one" else 3)
        if name == "two":
            with Library.open(library, model=str(models[1])) as lib:
                assert lib.index().indexed == 3
