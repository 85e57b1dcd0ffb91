"""Combined queries end to end with the tiny real model: `pixquery search "beach +sunset -people"`
in a subprocess ranks the photos exactly as the individual encodings, combined by hand, do."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clirun import pixquery
from photos import make_photos, photo
from pixquery.api import Library


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("combined")
    make_photos(root / "photos", 12)
    lib = root / "lib"
    with Library.open(lib, model=str(tiny_model)) as opened:
        opened.index([root / "photos"])
    ref = root / "ref.jpg"  # an example photo that is not in the library
    photo(seed=4242).save(ref)
    return lib, ref


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def by_hand(lib_path, parts):
    """[(path, score)] best first, for sum(weight * normalize(embedding)), normalised; the
    embeddings made one at a time (each text alone through the text tower, the image through the
    library's decode stage) and the photos' vectors read from the catalog."""
    with Library.open(lib_path, create=False) as lib:
        q = np.zeros(lib.encoder.dim)
        for kind, value, weight in parts:
            v = lib.encoder.encode_texts([value])[0] if kind == "text" else lib.embed_image(value)
            q += weight * unit(v)
        q = unit(q)
        model = lib.catalog.model_by_fingerprint(lib.encoder.fingerprint)
        paths = {}
        for r in lib.search(vector=q, k=100):
            paths[r.image_id] = r.path
        scores = {paths[i]: float(unit(lib.catalog.image_embedding(model.id, i)) @ q) for i in paths}
    assert len(scores) == 12
    return sorted(scores.items(), key=lambda kv: -kv[1])


def search_json(lib, *args):
    r = pixquery("search", *args, "-L", lib, "-k", "12", "--json", env={"PIXQUERY_NO_DAEMON": "1"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return out, [(x["path"], x["score"]) for x in out["results"]]


def assert_ranking(got, want):
    assert [p for p, _ in got] == [p for p, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=2e-6)


def test_inline_query_ranks_as_the_individual_encodings(indexed):
    lib, _ = indexed
    out, got = search_json(lib, "beach +sunset -people")
    assert out["parts"] == [
        {"kind": "text", "value": "beach", "weight": 1.0},
        {"kind": "text", "value": "sunset", "weight": 1.0},
        {"kind": "text", "value": "people", "weight": -1.0},
    ]
    assert_ranking(got, by_hand(lib, [("text", "beach", 1), ("text", "sunset", 1), ("text", "people", -1)]))
    _, plain = search_json(lib, "beach")
    assert [p for p, _ in plain] != [p for p, _ in got]  # the added and subtracted parts changed the order


def test_options_with_a_weighted_image(indexed):
    lib, ref = indexed
    out, got = search_json(lib, "beach", "--add", "sunset", "--subtract", "people", "--image", ref, "--weight", "0.5")
    assert [p["kind"] for p in out["parts"]] == ["text", "text", "text", "image"] and out["parts"][3]["weight"] == 0.5
    want = by_hand(lib, [("text", "beach", 1), ("text", "sunset", 1), ("text", "people", -1), ("image", ref, 0.5)])
    assert_ranking(got, want)
    # a hyphenated word stays one phrase: "t-shirt" is searched as it is, not as "t" minus "shirt"
    out, got = search_json(lib, "a t-shirt in black-and-white")
    assert out["parts"] == [{"kind": "text", "value": "a t-shirt in black-and-white", "weight": 1.0}]
    assert_ranking(got, by_hand(lib, [("text", "a t-shirt in black-and-white", 1)]))
    # an image alone, subtracted: the photos least like it first
    _, got = search_json(lib, "--image", ref, "--weight", "-1")
    assert_ranking(got, by_hand(lib, [("image", ref, -1)]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["beach +"], "nothing after '+' in the query 'beach +'"),
        (['beach "sunset'], "unclosed quote"),
        (["beach -beach"], "cancel out"),
        (["beach", "--weight", "2"], "1 --weight for 0 --image"),
        (["beach", "--image", "no-such.jpg"], "no-such.jpg: cannot read"),
        (["beach", "--weight", "heavy", "--image", "x.jpg"], "Invalid value for '--weight'"),
    ],
)
def test_bad_queries_are_one_line_errors(indexed, args, message):
    lib, _ = indexed
    r = pixquery("search", *args, "-L", lib)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_a_query_that_starts_with_a_minus_follows_double_dash(indexed):
    lib, _ = indexed
    r = pixquery("search", "-L", lib, "-k", "12", "--json", "--", "-people +beach", env={"PIXQUERY_NO_DAEMON": "1"})
    assert r.returncode == 0, r.stderr
    got = [(x["path"], x["score"]) for x in json.loads(r.stdout)["results"]]
    assert_ranking(got, by_hand(lib, [("text", "people", -1), ("text", "beach", 1)]))
