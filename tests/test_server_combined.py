"""Combined queries over HTTP (GET /api/search with q's inline syntax and repeated add, subtract,
like, unlike), against a real `pixquery serve` process with the tiny model: every answer is
checked against the query vector combined by hand from the individual encodings."""

from __future__ import annotations

import numpy as np
import pytest

from test_server_support import build_library, running_server

N_PHOTOS = 16


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("combined-server")
    lib_path, photos = build_library(root, tiny_model, N_PHOTOS)
    with running_server(lib_path, tiny_model, root / "server.log") as server:
        server.lib_path, server.photos, server.model = lib_path, photos, tiny_model
        with server.client() as client:
            server.api = client
            yield server


@pytest.fixture(scope="module")
def lib(served):
    from pixquery.api import Library

    with Library.open(served.lib_path, model=str(served.model), create=False) as opened:
        yield opened


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def by_hand(lib, texts=(), photos=(), exclude=()):
    """[(image_id, score)] best first for normalize(sum w * normalize(e)), scored with numpy
    against every photo's stored vector. texts, photos: (value, weight) pairs."""
    model = lib.catalog.model_by_fingerprint(lib.encoder.fingerprint)
    ids = [r.image_id for r in lib.search(vector=np.eye(lib.encoder.dim, dtype=np.float32)[0], k=100)]
    stored = {i: lib.catalog.image_embedding(model.id, i) for i in ids}
    q = np.zeros(lib.encoder.dim)
    for text, w in texts:
        q += w * unit(lib.encoder.encode_texts([text])[0])
    for pid, w in photos:
        q += w * unit(stored[pid])
    q = unit(q)
    scores = sorted(((i, float(unit(v) @ q)) for i, v in stored.items() if i not in exclude), key=lambda t: -t[1])
    assert len(scores) == N_PHOTOS - len(exclude)
    return scores


def assert_ranking(hits, want):
    assert [h["image_id"] for h in hits] == [i for i, _ in want[: len(hits)]]
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in want[: len(hits)]], rtol=0, atol=2e-6)


def test_inline_syntax_in_q(served, lib):
    page = served.api.get("/api/search", params={"q": "beach +sunset -people", "k": N_PHOTOS}).json()
    assert page["query"]["text"] == "beach +sunset -people"
    assert page["query"]["parts"] == [
        {"kind": "text", "value": "beach", "weight": 1.0},
        {"kind": "text", "value": "sunset", "weight": 1.0},
        {"kind": "text", "value": "people", "weight": -1.0},
    ]
    assert_ranking(page["results"], by_hand(lib, [("beach", 1), ("sunset", 1), ("people", -1)]))
    # the same query in repeated parameters gives the same page
    params = [("q", "beach"), ("add", "sunset"), ("subtract", "people"), ("k", str(N_PHOTOS))]
    same = served.api.get("/api/search", params=params).json()
    assert same["results"] == page["results"]
    # a hyphenated word is one phrase
    hyphen = served.api.get("/api/search", params={"q": "a black-and-white t-shirt", "k": 5}).json()
    assert "parts" not in hyphen["query"]
    assert_ranking(hyphen["results"], by_hand(lib, [("a black-and-white t-shirt", 1)]))


def test_more_and_less_like_a_result(served, lib):
    first = served.api.get("/api/search", params={"q": "a dog", "k": N_PHOTOS}).json()["results"]
    liked, disliked = first[3]["image_id"], first[0]["image_id"]
    params = [("q", "a dog"), ("like", str(liked)), ("unlike", str(disliked)), ("k", str(N_PHOTOS))]
    page = served.api.get("/api/search", params=params).json()
    assert page["query"]["parts"][1:] == [
        {"kind": "image_id", "value": liked, "weight": 1.0},
        {"kind": "image_id", "value": disliked, "weight": -1.0},
    ]
    want = by_hand(lib, [("a dog", 1)], [(liked, 1), (disliked, -1)], exclude={liked})
    assert_ranking(page["results"], want)
    ids = [h["image_id"] for h in page["results"]]
    assert liked not in ids  # "more like this" leaves the photo itself out
    # an image of the library with a negative weight, and paging through a combined query
    params = [("image_id", str(liked)), ("image_weight", "-0.5"), ("q", "a dog"), ("k", "5"), ("offset", "5")]
    more = served.api.get("/api/search", params=params).json()
    want = by_hand(lib, [("a dog", 1)], [(liked, -0.5)])
    assert [h["rank"] for h in more["results"]] == [6, 7, 8, 9, 10]
    assert_ranking(more["results"], want[5:])


@pytest.mark.parametrize(
    "params, status, message",
    [
        ({"q": "beach +"}, 400, "nothing after '+'"),
        ({"q": 'beach "sunset'}, 400, "unclosed quote"),
        ({"q": "beach -beach"}, 400, "cancel out"),
        ({"add": "   "}, 400, "empty"),
        ({"q": "dog", "like": 987654}, 404, "no image with id 987654"),
        ({"q": "dog", "unlike": 2**70}, 422, ""),
        ([("q", "dog")] + [("add", "x")] * 33, 422, "at most 32"),
    ],
)
def test_bad_combined_queries_are_json_errors(served, params, status, message):
    r = served.api.get("/api/search", params=params)
    assert r.status_code == status, r.text
    assert message in r.json()["error"] and "Traceback" not in r.text


def test_openapi_documents_the_repeated_parameters(served):
    spec = served.api.get("/api/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/api/search"]["get"]["parameters"]}
    for name in ("add", "subtract", "like", "unlike"):
        assert params[name]["schema"]["type"] == "array" and params[name]["description"]
    assert params["image_weight"]["schema"]["type"] == "number"
    assert "beach +sunset -people" in spec["paths"]["/api/search"]["get"]["description"]
