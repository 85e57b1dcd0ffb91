"""One ranked list from two: the semantic (CLIP) ranking and the text (OCR) ranking of a query.

Weighted reciprocal-rank fusion: an item at rank r of a list scores weight * strength / (K + r),
summed over the lists it is in. Ranks, not raw scores, because a cosine and a text-match share
are not on one scale (and CLIP cosines shift from model to model); K = 60 as in Cormack et al.
(2009). The text list carries each hit's match strength (1 for all words found as written, less
for fuzzy or partial matches), and is weighted TEXT_WEIGHT = 2: a photo that holds the query's
words as text is stronger evidence than a cosine rank, so a full text match at text rank r
outranks every semantic-only hit while r < ~60, and photos found by both lists rise above
either alone. Plain RRF (both weights 1) ties a text hit at rank 1 with the semantic rank 1 and
loses the tie to it: in bench/ocr_accuracy.py (105 photos with text, the same 105 without) it put
the photo with the queried word first for 0.12 of full-word queries, the weighted fusion for 0.54,
as often as the text side alone (0.55), while keeping semantic hits below: bench/results/ocr-accuracy.md.

A subtracted phrase the text of a photo holds ("invoice -draft", a photo reading "DRAFT") is
evidence against it as strong as a text match is for it, and no rank-sum can state it (a minus
term would depend on how deep the lists go): such photos are `demoted`, listed after every
photo that is not, in their fused order. They stay in the list, below the others, because the
text read can be wrong, and a page with fewer results than asked would hide that they exist.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field

K = 60
TEXT_WEIGHT = 2.0


@dataclass
class Fused:
    key: Hashable
    score: float
    ranks: dict = field(default_factory=dict)  # list name -> rank (1-based) in that list


def fuse(
    lists: dict[str, Sequence[tuple[Hashable, float]]],
    weights: dict[str, float] | None = None,
    k: int = K,
    demoted: Collection[Hashable] = (),
) -> list[Fused]:
    """`lists`: name -> [(key, strength)] best first. Returns every key once, best fused first,
    the `demoted` keys after all others; ties keep the order of the first list that has them."""
    weights = weights or {}
    demoted = frozenset(demoted)
    out: dict[Hashable, Fused] = {}
    order: list[Hashable] = []
    for name, items in lists.items():
        w = weights.get(name, 1.0)
        for rank, (key, strength) in enumerate(items, 1):
            f = out.get(key)
            if f is None:
                f = out[key] = Fused(key, 0.0)
                order.append(key)
            if name in f.ranks:
                continue  # a key listed twice in one list counts at its best rank
            f.ranks[name] = rank
            f.score += w * strength / (k + rank)
    position = {key: n for n, key in enumerate(order)}
    return sorted(out.values(), key=lambda f: (f.key in demoted, -f.score, position[f.key]))


__all__ = ["Fused", "fuse", "K", "TEXT_WEIGHT"]
