"""Combined queries: a query is a weighted sum of parts (texts, images, library photos, uploads).

    beach +sunset -people          the inline syntax: "beach" + "sunset" - "people"
    Query.parse("beach").plus_image("ref.jpg", 0.5)

The query vector is the one rclip and the CLIP literature use: each part's embedding, L2-normalised,
times its weight, summed, and the sum L2-normalised again:

    q = normalize(sum_i w_i * normalize(e_i))

so a part's pull depends on its weight only, not on how long its raw embedding happens to be, and
the result is a unit vector like any other query (scores stay cosines, thresholds keep meaning).
A negative weight pushes photos like that part down.

The inline syntax (docs/search.md):
  * `+` or `-` at the start of a word starts a new part, added or subtracted; the part is every
    word up to the next such operator: `a dog -people on bikes` is "a dog" minus "people on bikes".
    A lone `+` / `-` (spaces around it) applies to the words after it.
  * A `-` or `+` inside a word is just a character: `t-shirt`, `black-and-white`, `C++`.
  * `\\+`, `\\-`, `\\"` and `\\\\` are the literal characters; text in double quotes is literal
    (`"-5 degrees"`, `-"black-and-white photo"`). The quotes themselves are dropped.

This module only parses and combines; `pixquery.api.Library.search` resolves the image parts
(a file, a photo already in the library, an upload) to embeddings and searches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pixquery.errors import PixqueryError

if TYPE_CHECKING:
    import numpy as np

# numpy is imported by the functions that need it, not here: `pixquery search` parses the query
# before asking the daemon, a path that imports only the standard library (docs/performance.md).

TEXT = "text"  # value: a phrase
IMAGE = "image"  # value: a path to an image file
IMAGE_ID = "image_id"  # value: the id of a photo in the library ("more like this")
UPLOAD = "upload"  # value: an uploaded picture's bytes, or the server's id for a stored upload
VECTOR = "vector"  # value: a raw embedding
KINDS = (TEXT, IMAGE, IMAGE_ID, UPLOAD, VECTOR)

_ESCAPABLE = '+-"\\'


@dataclass(frozen=True)
class Part:
    kind: str
    value: Any
    weight: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PixqueryError(f"a query part is one of {', '.join(KINDS)}, not {self.kind!r}")
        try:
            weight = float(self.weight)
        except (TypeError, ValueError):
            raise PixqueryError(f"a weight is a number, not {self.weight!r}") from None
        if not math.isfinite(weight):
            raise PixqueryError(f"a weight is a finite number, not {self.weight!r}")
        object.__setattr__(self, "weight", weight)
        if self.kind == TEXT and not str(self.value).strip():
            raise PixqueryError("a text part of the query is empty")

    def to_dict(self) -> dict:
        """JSON-able: what the CLI's --json and the HTTP API say was searched."""
        value = self.value
        if self.kind == UPLOAD and isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        elif self.kind == VECTOR:
            value = f"<vector of {len(value)}>"
        elif self.kind == IMAGE:
            value = str(value)
        return {"kind": self.kind, "value": value, "weight": self.weight}


class Query:
    """An ordered list of weighted parts. Immutable: the plus_/minus_ methods return a new Query."""

    def __init__(self, parts: Iterable[Part] = ()):
        self.parts: tuple[Part, ...] = tuple(parts)

    @classmethod
    def parse(cls, text: str) -> Query:
        return parse_inline(text)

    def __iter__(self):
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def __eq__(self, other) -> bool:
        return isinstance(other, Query) and _comparable(self.parts) == _comparable(other.parts)

    def __repr__(self) -> str:
        return f"Query({list(self.parts)!r})"

    def _with(self, kind: str, value, weight: float) -> Query:
        return Query(self.parts + (Part(kind, value, weight),))

    def plus(self, text: str, weight: float = 1.0) -> Query:
        """Add a phrase, literally (no inline syntax in it)."""
        return self._with(TEXT, text, weight)

    def minus(self, text: str, weight: float = 1.0) -> Query:
        return self._with(TEXT, text, -weight)

    def plus_image(self, path, weight: float = 1.0) -> Query:
        return self._with(IMAGE, path, weight)

    def plus_photo(self, image_id: int, weight: float = 1.0) -> Query:
        """A photo of the library: weight > 0 "more like this", < 0 "less like this"."""
        return self._with(IMAGE_ID, int(image_id), weight)

    def plus_upload(self, data_or_id, weight: float = 1.0) -> Query:
        return self._with(UPLOAD, data_or_id, weight)

    def plus_vector(self, vector, weight: float = 1.0) -> Query:
        import numpy as np

        return self._with(VECTOR, np.asarray(vector, dtype=np.float32), weight)

    def text_terms(self) -> list[str]:
        """The phrases added (positive weight), in order: what a text search (OCR) looks for."""
        return [p.value for p in self.parts if p.kind == TEXT and p.weight > 0]

    def excluded_text_terms(self) -> list[str]:
        """The phrases subtracted (negative weight): a text search (OCR) leaves out the photos whose
        text holds one (pixquery.text_search.holding_phrases)."""
        return [p.value for p in self.parts if p.kind == TEXT and p.weight < 0]

    def liked_photos(self) -> set[int]:
        """Library photos added ("more like this"): a search leaves them out of its results."""
        return {p.value for p in self.parts if p.kind == IMAGE_ID and p.weight > 0}

    def to_dicts(self) -> list[dict]:
        return [p.to_dict() for p in self.parts]

    def to_inline(self) -> str | None:
        """The inline text that parses back to this query, or None when it has no such form
        (a part that is not text, a weight other than +1 or -1)."""
        out = []
        for n, p in enumerate(self.parts):
            if p.kind != TEXT or p.weight not in (1.0, -1.0):
                return None
            sign = "-" if p.weight < 0 else ("" if n == 0 else "+")
            out.append(sign + _quote(p.value))
        return " ".join(out) if out else None


def _comparable(parts):
    return [(p.kind, p.value.tobytes() if hasattr(p.value, "tobytes") else p.value, p.weight) for p in parts]


def _quote(phrase: str) -> str:
    """A phrase written so that parse_inline reads it back as one literal part."""
    words = []
    for word in " ".join(phrase.split()).split(" "):
        word = word.replace("\\", "\\\\").replace('"', '\\"')
        if word[:1] in "+-":
            word = "\\" + word
        words.append(word)
    return " ".join(words)


def parse_inline(text: str) -> Query:
    """ "beach +sunset -people" -> Query(text "beach" +1, "sunset" +1, "people" -1). See the module
    docstring for the rules; raises PixqueryError (one line, naming the problem) for an unclosed
    quote, an operator with nothing after it, or an empty query."""
    if text is None or not str(text).strip():
        raise PixqueryError("the query is empty")
    text = str(text)
    parts: list[tuple[float, str]] = []
    sign, phrase, word = 1.0, [], []  # the part being read: its sign, its finished words, the current word
    in_word = False  # a word has started (even an empty quoted one: `""`)
    pending: str | None = None  # an operator read, whose part has no word yet
    quoted = False
    i = 0

    def end_word():
        nonlocal word, in_word, pending
        if in_word:
            phrase.append("".join(word))
            pending = None
        word, in_word = [], False

    def start_part(op: str):
        nonlocal sign, phrase, pending
        end_word()
        if pending is not None:
            raise PixqueryError(
                f"nothing after {pending!r} in the query {text!r} (write \\{pending} for a literal {pending})"
            )
        flush()
        sign, phrase, pending = (1.0 if op == "+" else -1.0), [], op

    def flush():
        joined = " ".join(" ".join(phrase).split())
        if joined:
            parts.append((sign, joined))
        elif phrase:  # only empty quotes: nothing to search for in that part
            raise PixqueryError(f'an empty part ("") in the query {text!r}')

    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            word.append(text[i + 1])
            in_word = True
            i += 2
            continue
        if quoted:
            if c == '"':
                quoted = False
            else:
                word.append(c)
            i += 1
            continue
        if c == '"':
            quoted, in_word = True, True
        elif c.isspace():
            end_word()
        elif c in "+-" and not in_word:
            start_part(c)  # `+x`, `-x`, or a lone `+`/`-` before the next word
        else:
            word.append(c)
            in_word = True
        i += 1
    if quoted:
        raise PixqueryError(f"unclosed quote in the query {text!r}")
    end_word()
    if pending is not None:
        raise PixqueryError(
            f"nothing after {pending!r} in the query {text!r} (write \\{pending} for a literal {pending})"
        )
    flush()
    if not parts:
        raise PixqueryError("the query is empty")
    return Query(Part(TEXT, phrase_text, weight) for weight, phrase_text in parts)


def combine(
    encoder, parts: Sequence[Part] | Query, embed_other: Callable[[Part], np.ndarray] | None = None
) -> np.ndarray:
    """The query vector of `parts`: normalize(sum w_i * normalize(e_i)).

    Texts are embedded by `encoder.encode_texts`, in one batch (a phrase given twice, once);
    every other part by `embed_other(part)` (the Library reads images, library photos, uploads).
    A single part of weight +1 is returned as its embedding, untouched, so a plain query gives
    exactly the vector (and scores) it always did. Raises PixqueryError when the parts cancel out."""
    import numpy as np

    parts = list(parts)
    if not parts:
        raise PixqueryError("the query is empty")
    texts = list(dict.fromkeys(p.value for p in parts if p.kind == TEXT))
    by_text = dict(zip(texts, np.asarray(encoder.encode_texts(texts), dtype=np.float32))) if texts else {}
    vectors = []
    for p in parts:
        if p.kind == TEXT:
            v = by_text[p.value]
        elif p.kind == VECTOR and embed_other is None:
            v = np.asarray(p.value, dtype=np.float32)
        elif embed_other is None:
            raise PixqueryError(f"a {p.kind} part needs a library to read it")
        else:
            v = embed_other(p)
        vectors.append(np.asarray(v, dtype=np.float32).reshape(-1))
    dims = {v.shape[0] for v in vectors}
    if len(dims) != 1:
        raise PixqueryError(f"the query's parts have embeddings of different widths: {sorted(dims)}")
    if len(parts) == 1 and parts[0].weight == 1.0:
        return vectors[0]
    total = np.zeros(vectors[0].shape[0], dtype=np.float64)
    for p, v in zip(parts, vectors):
        norm = float(np.linalg.norm(v))
        if norm > 0:
            total += p.weight * (v.astype(np.float64) / norm)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise PixqueryError("the query's parts cancel out (their weighted sum is zero): change a weight or a part")
    return (total / norm).astype(np.float32)
