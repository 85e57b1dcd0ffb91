"""The query stage (pixquery.search.run_query): which catalog rows a search reads."""

from __future__ import annotations

import numpy as np
import pytest

from pixquery import indexes
from pixquery.catalog import Catalog
from pixquery.ingest.sync import sync_index
from pixquery.search import run_query

N, DIM = 300, 16


class Watched:
    """The catalog, counting the image rows read, and hiding some photos from `images` as if
    their rows had gone between the index lookup and reading the paths."""

    def __init__(self, catalog: Catalog, hidden=()):
        self._catalog, self.hidden, self.rows_read = catalog, set(hidden), 0

    def __getattr__(self, name):
        return getattr(self._catalog, name)

    def images(self, ids):
        ids = list(ids)
        self.rows_read += len(ids)
        return {i: r for i, r in self._catalog.images(ids).items() if i not in self.hidden}


@pytest.fixture
def library(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cat = Catalog(tmp_path / "catalog.sqlite")
    with cat.transaction():
        model = cat.ensure_model("m", "fp", DIM)
        ids = cat.add_photos(model.id, [(f"/p/{i:03d}.jpg", 1, 1, None, 4, 3) for i in range(N)], x)
    sync_index(cat, tmp_path, model, "flat", {})
    row = cat.active_index(model.id)
    index = indexes.load_index(row.kind, tmp_path / row.path)
    yield cat, row, index, np.array(ids), x
    cat.close()


def test_reads_the_rows_of_the_k_results_only(library):
    cat, row, index, ids, x = library
    q = x[7] + 0.3 * x[8]
    best = ids[np.argsort(-(x @ q))]
    watched = Watched(cat)
    res = run_query(watched, index, row, q, 10)
    assert [r.image_id for r in res] == best[:10].tolist()
    assert [r.path for r in res] == [cat.image(int(i)).path for i in best[:10]]
    assert [r.rank for r in res] == list(range(1, 11)) and (res[0].width, res[0].height) == (4, 3)
    assert watched.rows_read == 10  # not the 56 hits fetched for k=10


def test_a_photo_gone_before_its_path_is_read_is_replaced_by_the_next(library):
    cat, row, index, ids, x = library
    q = x[7] + 0.3 * x[8]
    best = ids[np.argsort(-(x @ q))]
    gone = {int(best[0]), int(best[2]), int(best[9])}
    watched = Watched(cat, hidden=gone)
    res = run_query(watched, index, row, q, 10)
    assert [r.image_id for r in res] == [i for i in best[:13].tolist() if i not in gone]
    assert watched.rows_read == 13
    # all but two gone: the search fetches more until the index has no more, and returns those two
    keep = {int(best[5]), int(best[200])}
    watched = Watched(cat, hidden=set(ids.tolist()) - keep)
    res = run_query(watched, index, row, q, 10)
    assert [r.image_id for r in res] == [int(best[5]), int(best[200])]
