"""The lexical side of a query: photos and videos whose text (read by OCR, ingest/ocr.py and
ingest/video_text.py) matches its words.

A query is folded (lower case, no accents) and split into words; short words (< 3 characters)
and common English words are ignored, so "a dog on the beach" asks for "dog" and "beach". Each
word is looked for as a sub-string of a photo's lines of text (the FTS5 trigram index: "RE16"
finds "RE16 TGK", "tgk" finds it too) and, when that fails, fuzzily, for misreadings: a word of
4-7 characters may differ by one character, 8+ by two, from a piece of a line (rapidfuzz's
edit distance to a piece of the line, over candidates that share a trigram with it). A fuzzy
match counts 0.8 of an exact one.

A photo's text score is the share of the query's words it matches (weighted by their length, so
"RE16" counts more than "at"), in [0, 1]; photos below `min_coverage` are not text hits. The
words run together are matched too, against lines without their spaces, so "RE16 TGX" (a code
with a misread 3-letter part) still finds "RE16 TGK". Each hit
keeps the lines that matched, with their boxes: the "why" shown to the user.

A video is matched as a whole (its lines of every frame), like a photo, and its hit points at the
first time its matched lines are on screen (`timestamp`), with the span they stay on together
(`time_range`): one hit per video, as one result per photo.

A subtracted phrase ("invoice -draft") works the other way (`holding_phrases`): a photo whose
text holds every word of it is no text hit, and fusion puts it below every photo that does not
hold it (fusion.py, docs/ocr.md). Stricter than finding, because leaving a photo out on a guess
hides what was asked for: each word must be found exactly as read (no misreadings forgiven:
"-draft" must not hide "CRAFT BEER") at the start of a word of the text ("-draft" holds "DRAFT"
and "Drafts", not "redraft"; "-art" not "START"). A video is asked the same at the moment of its
hit (`held_in_videos`): the lines on screen then, not those of the whole video; its text hit
moves to a moment of its words without the phrase, if there is one (`without_held`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pixquery.catalog import Catalog
from pixquery.catalog.text import TextLine, fold

MIN_WORD = 3  # the trigram index finds nothing shorter; shorter words are ignored (unless alone)
FUZZY_MIN = 4  # words this long or longer are also matched fuzzily
FUZZY_WEIGHT = 0.8  # a fuzzy match counts this much of an exact one
MIN_COVERAGE = 0.6  # a text hit must match this share of the query's words (by length)

# Words too common to say anything about the text in a photo ("the" is in half of all signs).
_COMMON = (
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were with photo photos picture image of some"
)
STOPWORDS = frozenset(_COMMON.split())


@dataclass
class TextHit:
    image_id: int | None  # the photo, or None for a video
    score: float  # share of the query matched, 0..1 (fuzzy matches count FUZZY_WEIGHT)
    lines: list[TextLine] = field(default_factory=list)  # the lines that matched, best first
    words: dict = field(default_factory=dict)  # query word -> "exact" | "fuzzy"
    video_id: int | None = None
    timestamp: float | None = None  # a video: seconds where the matched lines are first on screen
    time_range: tuple[float, float] | None = None  # ... and the span they stay on

    @property
    def key(self) -> tuple[str, int]:
        return ("image", self.image_id) if self.video_id is None else ("video", self.video_id)


def _owner(line: TextLine) -> tuple[str, int]:
    """The photo or video a line is in, as TextHit.key."""
    return ("image", line.image_id) if line.video_id is None else ("video", line.video_id)


def _hit_of(line: TextLine) -> TextHit:
    return TextHit(line.image_id, 0.0, video_id=line.video_id)


def _place_in_video(hit: TextHit) -> None:
    """A video hit's timestamp: the first start of its matched lines; its time range: from there
    to the end of the matched lines whose runs overlap that span (not a later reappearance)."""
    runs = sorted(
        (ln.timestamp, ln.timestamp_end if ln.timestamp_end is not None else ln.timestamp)
        for ln in hit.lines
        if ln.timestamp is not None
    )
    if not runs:
        return
    start, end = runs[0]
    for s, e in runs[1:]:
        if s <= end:
            end = max(end, e)
    hit.timestamp, hit.time_range = start, (start, end)


def query_words(query: str) -> list[str]:
    """The folded words of `query` the text side looks for."""
    words = [w.strip(".,;:!?\"'()[]{}") for w in fold(query).split()]
    words = [w for w in words if w]
    kept = [w for w in words if len(w) >= MIN_WORD and w not in STOPWORDS]
    if not kept and len(words) == 1:  # a lone short word ("A4"): look for it anyway
        kept = words
    return list(dict.fromkeys(kept))


def _allowed_edits(word: str) -> int:
    return 0 if len(word) < FUZZY_MIN else 1 if len(word) < 8 else 2


def misreadings(word: str, text: str, edits: int) -> int | None:
    """The fewest edits (insertions, deletions, substitutions) that turn some piece of `text`
    into `word`, if at most `edits`; else None. Pieces of len(word) +- edits are compared, so a
    line shorter than the word by more than `edits` never matches (a short read word, "and",
    must not match a long query word, "understand")."""
    from rapidfuzz.distance import Levenshtein

    n, best = len(word), None
    for size in range(max(1, n - edits), n + edits + 1):
        for start in range(0, max(0, len(text) - size) + 1):
            piece = text[start : start + size]
            if len(piece) < n - edits:
                continue
            d = Levenshtein.distance(word, piece, score_cutoff=edits)
            if d <= edits and (best is None or d < best):
                best = d
                if d == 0:
                    return 0
    return best


def _fuzzy_matches(word: str, lines: list[TextLine]) -> list[tuple[int, TextLine]]:
    """(edits, line) of the lines that hold `word` with at most its allowed misreadings: one for
    a word of 4-7 characters, two from 8."""
    from rapidfuzz import fuzz

    edits = _allowed_edits(word)
    # A cheap filter first: partial_ratio aligns the word with its best piece of a line; one
    # substituted character costs 2 of its 2 * len(word) insertions/deletions.
    cutoff = 100.0 * (1.0 - edits / len(word)) - 1e-6
    out = []
    for line in lines:
        text = fold(line.text)
        if fuzz.partial_ratio(word, text, score_cutoff=cutoff):
            d = misreadings(word, text, edits)
            if d is not None:
                out.append((d, line))
    return out


def _match_phrase(catalog: Catalog, phrase: str, per_photo: dict[tuple, TextHit], limit: int) -> None:
    """The query's words run together ("re16tgx") against lines with their spaces dropped: a
    misread short word of a code ("TGK" as "TGX": too short to match fuzzily alone) or a space
    the recogniser lost or added still finds the line. Raises a photo's score to 1 (exact) or
    FUZZY_WEIGHT."""
    edits = _allowed_edits(phrase)
    for line in catalog.lines_sharing_trigrams(phrase, limit=limit * 5):
        d = misreadings(phrase, fold(line.text).replace(" ", ""), edits)
        if d is None:
            continue
        hit = per_photo.setdefault(_owner(line), _hit_of(line))
        strength = 1.0 if d == 0 else FUZZY_WEIGHT
        if strength > hit.score:
            hit.score = strength
            hit.words[phrase] = "exact" if d == 0 else "fuzzy"
        if all(line.detection_id != seen.detection_id for seen in hit.lines):
            hit.lines.append(line)


def search_text(
    catalog: Catalog, query: str, *, limit: int = 200, fuzzy: bool = True, min_coverage: float = MIN_COVERAGE
) -> list[TextHit]:
    """Photos and videos whose text matches `query`, best first (score, then confidence of the lines)."""
    words = query_words(query)
    if not words:
        return []
    total = sum(len(w) for w in words)
    per_photo: dict[tuple, TextHit] = {}  # TextHit.key -> hit
    for word in words:
        found: dict[tuple, tuple[float, list[TextLine]]] = {}
        for line in catalog.lines_containing(word, limit=limit * 5):
            found.setdefault(_owner(line), (1.0, []))[1].append(line)
        if fuzzy and _allowed_edits(word):
            candidates = [ln for ln in catalog.lines_sharing_trigrams(word, limit=limit * 5) if _owner(ln) not in found]
            for _, line in sorted(_fuzzy_matches(word, candidates), key=lambda x: x[0]):
                found.setdefault(_owner(line), (FUZZY_WEIGHT, []))[1].append(line)
        for owner, (strength, lines) in found.items():
            hit = per_photo.setdefault(owner, _hit_of(lines[0]))
            hit.score += strength * len(word) / total
            hit.words[word] = "exact" if strength == 1.0 else "fuzzy"
            for line in lines:
                if all(line.detection_id != seen.detection_id for seen in hit.lines):
                    hit.lines.append(line)
    if fuzzy and len("".join(words)) >= FUZZY_MIN:  # one word too: "re16tgk" is "RE16 TGK" read
        _match_phrase(catalog, "".join(words), per_photo, limit)
    hits = [h for h in per_photo.values() if h.score >= min_coverage - 1e-9]
    for h in hits:
        h.score = min(1.0, h.score)
        h.lines.sort(key=lambda ln: -(ln.score or 0.0))
        if h.video_id is not None:
            _place_in_video(h)
    hits.sort(key=lambda h: (-h.score, -max((ln.score or 0.0) for ln in h.lines), h.key))
    return hits[:limit]


def _subtracted(phrases: Sequence[str]) -> tuple[list[list[str]], dict[str, re.Pattern]]:
    """The words of each subtracted phrase (query_words; phrases with none dropped), and for each
    word the pattern of a word of text starting with it."""
    wanted = [words for words in (query_words(p) for p in phrases) if words]
    return wanted, {w: re.compile(r"(?<!\w)" + re.escape(w)) for words in wanted for w in words}


def _holding(wanted: list[list[str]], found: list[tuple[TextLine, set[str]]]) -> list[TextLine]:
    """The lines of `found` ((line, the subtracted words it holds)) that hold a phrase of `wanted`
    whose every word is in one of them; [] when none is held whole."""
    out: list[TextLine] = []
    for words in wanted:
        holding = [[line for line, has in found if w in has] for w in words]
        if all(holding):
            for line in (ln for per_word in holding for ln in per_word):
                if all(line.detection_id != seen.detection_id for seen in out):
                    out.append(line)
    return out


def holding_phrases(catalog: Catalog, phrases: Sequence[str], image_ids: Iterable[int]) -> dict[int, list[TextLine]]:
    """Which of `image_ids` hold a subtracted phrase in their text: image id -> the lines that
    hold its words. A photo holds a phrase when every word of it (query_words: folded, common and
    short words dropped) starts a word somewhere in the photo's lines, exactly as read."""
    wanted, patterns = _subtracted(phrases)
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not wanted or not ids:
        return {}
    out: dict[int, list[TextLine]] = {}
    for image_id, lines in catalog.text_of_photos(ids).items():
        found = [(line, {w for w, p in patterns.items() if p.search(fold(line.text))}) for line in lines]
        held = _holding(wanted, found)
        if held:
            out[image_id] = held
    return out


@dataclass
class HeldInVideos:
    """The lines of some videos that hold words of subtracted phrases, asked moment by moment.

    A video result is a moment, not the file: the player starts there, the thumbnail is that
    frame, and one video (a screen recording, a walk down a street of shop signs) gives several
    results at different times. So a video holds a phrase at the time of a hit when every word of
    it starts a word of a line on screen then: a line whose run of frames [timestamp,
    timestamp_end] meets the hit's time (its time range, or its one frame). "invoice -draft" then
    still finds the moment a video shows a final invoice, though a draft was on screen a minute
    earlier; holding it anywhere in the video would hide every moment of a long video for one
    sign seen once. The runs are of the very frames the embeddings are of (ingest/video_text.py),
    so the two meet exactly, with no tolerance."""

    wanted: list[list[str]]
    lines: dict[int, list[tuple[TextLine, set[str]]]]  # video id -> (line, the subtracted words it holds)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def at(
        self, video_id: int | None, timestamp: float | None, time_range: tuple[float, float] | None = None
    ) -> list[TextLine]:
        """The lines on screen in `video_id` at a hit's time (`time_range`, else its one frame at
        `timestamp`; neither: the whole video) that hold a subtracted phrase; [] when none does."""
        if video_id is None or video_id not in self.lines:
            return []
        if time_range is not None:
            start, end = time_range
        elif timestamp is not None:
            start = end = timestamp
        else:
            start, end = -math.inf, math.inf
        on_screen = [
            (line, has)
            for line, has in self.lines[video_id]
            if line.timestamp is None
            or (
                line.timestamp <= end
                and start <= (line.timestamp_end if line.timestamp_end is not None else line.timestamp)
            )
        ]
        return _holding(self.wanted, on_screen)


def _run_of(line: TextLine) -> tuple[float | None, tuple[float, float] | None]:
    """(timestamp, time range) of a video's line: the run of frames it is on screen."""
    if line.timestamp is None:
        return None, None
    return line.timestamp, (line.timestamp, line.timestamp_end if line.timestamp_end is not None else line.timestamp)


def without_held(hit: TextHit, held: HeldInVideos) -> TextHit | None:
    """A text hit once the video moments holding a subtracted phrase are out: the hit itself when
    its moment holds none (a photo's hit too: holding_phrases judges those); a video's hit moved to
    its matched lines on screen without one (the words also show at 30 s, where DRAFT is not:
    that moment is the hit, as search_text would place it with only those lines); None when every
    moment of its words holds one. Its score stays: a video is matched as a whole (search_text)."""
    if hit.video_id is None or not held.at(hit.video_id, hit.timestamp, hit.time_range):
        return hit
    clear = [line for line in hit.lines if not held.at(hit.video_id, *_run_of(line))]
    if not clear:
        return None
    moved = TextHit(hit.image_id, hit.score, clear, dict(hit.words), hit.video_id)
    _place_in_video(moved)
    # runs clear one by one can still hold a phrase together, its words in two of them
    return None if held.at(moved.video_id, moved.timestamp, moved.time_range) else moved


def held_in_videos(catalog: Catalog, phrases: Sequence[str], video_ids: Iterable[int]) -> HeldInVideos:
    """The lines of `video_ids` holding any word of a subtracted phrase (the same rule as
    holding_phrases: a word starting a word of the line, exactly as read), to ask at each hit's
    moment (HeldInVideos.at)."""
    wanted, patterns = _subtracted(phrases)
    ids = list(dict.fromkeys(int(i) for i in video_ids if i is not None))
    lines: dict[int, list[tuple[TextLine, set[str]]]] = {}
    if wanted and ids:
        for video_id, found in catalog.text_of_videos(ids).items():
            for line in found:
                text = fold(line.text)
                has = {w for w, p in patterns.items() if p.search(text)}
                if has:
                    lines.setdefault(video_id, []).append((line, has))
    return HeldInVideos(wanted, lines)


__all__ = [
    "HeldInVideos",
    "TextHit",
    "held_in_videos",
    "holding_phrases",
    "query_words",
    "search_text",
    "without_held",
    "STOPWORDS",
]
