"""Combined queries (pixquery.query): the inline syntax, and known-answer rankings.

The known-answer tests run Library.search on a real catalog and a real flat index whose photo
vectors are set by hand, with a stand-in text encoder that maps each word to a fixed direction:
every score is then computable with numpy, and the test asserts the exact ranked scores.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from pixquery.api import Library
from pixquery.encoders.base import PreprocessConfig
from pixquery.errors import PixqueryError
from pixquery.ingest.sync import sync_index
from pixquery.query import TEXT, Part, Query, combine, parse_inline

# -- the inline syntax ---------------------------------------------------------------------------


def texts(query: Query) -> list[tuple[str, float]]:
    assert all(p.kind == TEXT for p in query)
    return [(p.value, p.weight) for p in query]


@pytest.mark.parametrize(
    "inline, parts",
    [
        ("beach +sunset -people", [("beach", 1), ("sunset", 1), ("people", -1)]),
        ("a red t-shirt", [("a red t-shirt", 1)]),  # a hyphen inside a word is not an operator
        ("black-and-white photo -people", [("black-and-white photo", 1), ("people", -1)]),
        (
            "a dog on the beach -people on bikes +sunset",
            [("a dog on the beach", 1), ("people on bikes", -1), ("sunset", 1)],
        ),
        ("beach - people + sunset", [("beach", 1), ("people", -1), ("sunset", 1)]),  # lone operators
        ("-people", [("people", -1)]),
        ("C++ code", [("C++ code", 1)]),
        (r"\-5 degrees \+1", [("-5 degrees +1", 1)]),  # escaped operators are literal
        ('"-5 degrees" +snow', [("-5 degrees", 1), ("snow", 1)]),  # so is quoted text
        ('beach -"red car"', [("beach", 1), ("red car", -1)]),
        (r"a \"quoted\" word \\ here", [('a "quoted" word \\ here', 1)]),
        ("  lots   of\tspace  ", [("lots of space", 1)]),
    ],
)
def test_parse_inline(inline, parts):
    q = parse_inline(inline)
    assert texts(q) == parts
    assert Query.parse(q.to_inline()) == q  # written back, it reads the same


@pytest.mark.parametrize(
    "inline, message",
    [
        ("", "the query is empty"),
        ("   ", "the query is empty"),
        ("beach +", "nothing after '+'"),
        ("beach + -people", "nothing after '+'"),
        ('beach "sunset', "unclosed quote"),
        ('beach +""', "an empty part"),
    ],
)
def test_parse_inline_errors(inline, message):
    with pytest.raises(PixqueryError, match=re.escape(message)):
        parse_inline(inline)


def test_text_terms_are_the_added_phrases():
    q = parse_inline("receipt +total amount -blurry").plus_photo(4).minus("dark")
    assert q.text_terms() == ["receipt", "total amount"]
    assert q.excluded_text_terms() == ["blurry", "dark"]
    assert q.liked_photos() == {4}
    assert q.to_inline() is None  # a photo part has no inline form


def test_weights_must_be_finite_numbers():
    with pytest.raises(PixqueryError, match="finite"):
        Part(TEXT, "x", float("nan"))
    with pytest.raises(PixqueryError, match="a number"):
        Part(TEXT, "x", "heavy")


# -- known answers -------------------------------------------------------------------------------

WORDS = ["beach", "sunset", "people", "dog", "snow", "city"]
DIM = 8


class WordEncoder:
    """A stand-in CLIP text tower: each known word is a fixed unit direction (one axis); a phrase
    is the normalised sum of its words. Counts its calls, to check texts are encoded once."""

    name, dim, fingerprint = "words", DIM, "test-words-v1"
    preprocess_cfg = PreprocessConfig()

    def __init__(self):
        self.calls: list[list[str]] = []

    def direction(self, word: str) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        v[WORDS.index(word)] = 1.0
        return v

    def encode_texts(self, phrases):
        self.calls.append(list(phrases))
        out = np.stack([sum(self.direction(w) for w in p.split()) for p in phrases]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_images(self, batch):
        raise AssertionError("no image is embedded in these tests")


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# photo name -> its vector, in the words' axes (beach, sunset, people, dog, snow, city, -, -)
PHOTOS = {
    "beach.jpg": [1.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0],
    "beach_people.jpg": [1.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.1],
    "beach_sunset.jpg": [1.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    "sunset.jpg": [0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3],
    "people.jpg": [0.0, 0.0, 1.0, 0.0, 0.0, 0.3, 0.0, 0.0],
    "dog_beach.jpg": [0.7, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    "snow.jpg": [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.1, 0.0],
    "city_people.jpg": [0.0, 0.0, 0.7, 0.0, 0.0, 1.0, 0.0, 0.0],
}
NAMES = list(PHOTOS)
# plus a little fixed noise on every axis, so that no two photos tie on any query
X = np.stack(
    [unit(np.array(v) + 0.05 * np.random.default_rng(n).uniform(size=DIM)) for n, v in enumerate(PHOTOS.values())]
)


@pytest.fixture
def known(tmp_path):
    """A library holding PHOTOS (real catalog, real flat index), searched with WordEncoder."""
    enc = WordEncoder()
    lib = Library.open(tmp_path / "lib", encoder=enc)
    with lib.catalog.transaction():
        model = lib.catalog.ensure_model(enc.name, enc.fingerprint, DIM)
        ids = lib.catalog.add_photos(
            model.id, [(f"/photos/{n}", 1, 1, None, 4, 3) for n in NAMES], X.astype(np.float32)
        )
    sync_index(lib.catalog, lib.path, model, "flat", {})
    yield lib, dict(zip(NAMES, ids)), enc
    lib.close()


def by_hand(q: np.ndarray, exclude=()) -> list[tuple[str, float]]:
    """The ranking numpy gives: every photo's cosine with q, best first."""
    scores = X @ q
    order = [i for i in np.argsort(-scores, kind="stable") if NAMES[i] not in exclude]
    return [(NAMES[i], float(scores[i])) for i in order]


def ranked(results) -> list[tuple[str, float]]:
    return [(r.path.rsplit("/", 1)[1], r.score) for r in results]


def assert_same_ranking(got, want):
    assert [n for n, _ in got] == [n for n, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-6)


def e(word):
    return unit(WordEncoder().direction(word))


def test_subtracting_a_concept_pushes_its_photos_down(known):
    lib, _, _ = known
    plain = ranked(lib.search("beach", k=len(NAMES)))
    assert_same_ranking(plain, by_hand(e("beach")))
    minus = ranked(lib.search("beach -people", k=len(NAMES)))
    want = by_hand(unit(e("beach") - e("people")))
    assert_same_ranking(minus, want)
    # what the arithmetic means: beach_people falls below dog_beach, and the people photos go last
    names_plain, names_minus = [n for n, _ in plain], [n for n, _ in minus]
    assert names_plain.index("beach_people.jpg") < names_plain.index("dog_beach.jpg")
    assert names_minus.index("beach_people.jpg") > names_minus.index("dog_beach.jpg")
    assert names_minus[-2:] == ["city_people.jpg", "people.jpg"]
    assert dict(minus)["beach_people.jpg"] < dict(plain)["beach_people.jpg"]


def test_adding_a_concept_pulls_its_photos_up(known):
    lib, _, _ = known
    want = by_hand(unit(e("beach") + e("sunset")))
    got = ranked(lib.search("beach +sunset", k=len(NAMES)))
    assert_same_ranking(got, want)
    assert [n for n, _ in got][:2] == ["beach_sunset.jpg", "beach.jpg"]
    assert [n for n, _ in got].index("sunset.jpg") < [n for n, _ in by_hand(e("beach"))].index("sunset.jpg")


def test_three_parts_inline_and_keywords_agree(known):
    lib, _, enc = known
    want = by_hand(unit(e("beach") + e("sunset") - e("people")))
    inline = ranked(lib.search("beach +sunset -people", k=len(NAMES)))
    keywords = ranked(lib.search("beach", add=["sunset"], subtract=["people"], k=len(NAMES)))
    built = ranked(lib.search(Query().plus("beach").plus("sunset").minus("people"), k=len(NAMES)))
    assert_same_ranking(inline, want)
    assert inline == keywords == built
    assert enc.calls[-1] == ["beach", "sunset", "people"]  # the texts go through the encoder in one batch


def test_parts_are_normalised_before_weighting(known):
    """Each part counts by its weight only: a raw vector 3x longer than unit pulls as a unit one."""
    lib, _, _ = known
    q = unit(unit(e("beach") + e("dog")) + 0.5 * e("snow"))
    got = ranked(lib.search(Query().plus("beach dog").plus_vector(3 * e("snow"), 0.5), k=len(NAMES)))
    assert_same_ranking(got, by_hand(q))
    assert got[0][0] == "dog_beach.jpg"  # unnormalised, the 3x vector would put snow.jpg first


def test_library_photos_with_weights(known):
    """An image part by photo id ("more like this" / "less like this"), weighted, with text."""
    lib, ids, _ = known
    q = unit(e("beach") + 0.5 * X[NAMES.index("sunset.jpg")] - 0.7 * X[NAMES.index("beach_people.jpg")])
    got = ranked(
        lib.search(
            Query.parse("beach").plus_photo(ids["sunset.jpg"], 0.5).plus_photo(ids["beach_people.jpg"], -0.7),
            k=len(NAMES),
        )
    )
    # a photo added as "more like this" is left out of the results; one subtracted stays (last)
    assert_same_ranking(got, by_hand(q, exclude={"sunset.jpg"}))
    assert got[-1][0] in {"people.jpg", "beach_people.jpg", "city_people.jpg"}
    # keyword form: the text and one photo, weighted by image_weight
    q2 = unit(e("snow") - 0.5 * X[NAMES.index("people.jpg")])
    got2 = ranked(lib.search("snow", image_id=ids["people.jpg"], image_weight=-0.5, k=len(NAMES)))
    assert_same_ranking(got2, by_hand(q2))


def test_a_plain_query_is_its_embedding_untouched(known):
    lib, _, enc = known
    v = enc.encode_texts(["beach"])[0]
    assert combine(enc, parse_inline("beach")).tobytes() == v.tobytes()


def test_parts_that_cancel_out_are_an_error(known):
    lib, _, _ = known
    with pytest.raises(PixqueryError, match="cancel out"):
        lib.search("beach -beach")
    with pytest.raises(PixqueryError, match="no image with id 999"):
        lib.search("beach", image_id=999)
    with pytest.raises(PixqueryError, match="give a query"):
        lib.search()
    with pytest.raises(PixqueryError, match="list of phrases"):
        lib.search("beach", add="sunset")


def test_combine_without_a_library_takes_vectors():
    enc = WordEncoder()
    q = Query.parse("beach").plus_vector(e("snow"), 2.0)
    np.testing.assert_allclose(combine(enc, q), unit(e("beach") + 2 * e("snow")), atol=1e-7)
    with pytest.raises(PixqueryError, match="needs a library"):
        combine(enc, Query().plus_photo(3))
