"""The query stage: a query vector -> index hits -> catalog rows -> ranked, thresholded results.

Scores are cosine similarities. The study ranked and thresholded by angular distance,
arccos(cos) / pi in [0, 1] (0 = same direction); both are reported, and a threshold is always an
angular distance, so a result is kept when its distance is at or below it.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pixquery.catalog import Catalog, IndexRow
from pixquery.filters import Filter


def angular_distance(cosine: float) -> float:
    return math.acos(max(-1.0, min(1.0, float(cosine)))) / math.pi


@dataclass
class SearchResult:
    rank: int
    score: float  # cosine similarity, higher is closer
    distance: float  # angular distance, arccos(score)/pi, lower is closer
    path: str
    image_id: int | None = None
    video_id: int | None = None
    detection_id: int | None = None
    timestamp: float | None = None  # seconds into the video
    time_range: tuple[float, float] | None = None  # merged adjacent hits of one video
    box: tuple[float, float, float, float] | None = None  # relative x0, y0, x1, y1 of a region
    width: int | None = None
    height: int | None = None
    # sigmoid-trained models (SigLIP): the model's probability that query and picture match,
    # sigmoid(logit_scale * score + logit_bias); None for CLIP models
    probability: float | None = None
    # When the text side ran (a library with OCR, text_search.py / fusion.py): which lists found
    # it ("semantic", "text" or "semantic+text") and the lines of text in the photo that matched
    # the query's words, each {"text", "box", "score"}: the why of a text hit.
    found_by: str | None = None
    matched: list[dict[str, Any]] | None = None
    # The lines of text in the photo that hold a phrase the query subtracted ("invoice -draft"):
    # why it comes after every result without them (fuse_with_text).
    demoted_by: list[dict[str, Any]] | None = None
    taken: str | None = None  # when it was taken, wall clock where taken (ISO 8601, no zone)
    taken_source: str | None = None  # where the date comes from: exif | quicktime | mtime
    lat: float | None = None  # GPS position, decimal degrees
    lon: float | None = None
    camera: str | None = None  # make and model
    duplicates: list[str] | None = None  # near-duplicates folded into this result (search collapse=)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Results(list):
    """A list of SearchResult, plus how many hits the threshold dropped."""

    def __init__(self, items=(), dropped: int = 0, threshold: float | None = None):
        super().__init__(items)
        self.dropped = dropped
        self.threshold = threshold


def run_query(
    catalog: Catalog,
    index,
    row: IndexRow,
    query: np.ndarray,
    k: int,
    threshold: float | None = None,
    exclude_image: int | Collection[int] | None = None,
    merge_gap: float | None = None,
    flt: Filter | None = None,
    sort: str = "score",
    strategy: str = "auto",
) -> Results:
    """Search `index` (described by `row`) and turn hits into results, best first, one per photo;
    hits of one video closer than `merge_gap` seconds become one result with a time range.
    exclude_image: photo id(s) left out (those a "more like this" query started from).
    `flt` keeps only what passes it (still k results when k pass: indexes/filtered.py, with
    `strategy`); sort="date" orders the results (those within the threshold) by date taken."""
    from pixquery.ingest.video import DEFAULT_MERGE_GAP

    merge_gap = DEFAULT_MERGE_GAP if merge_gap is None else merge_gap
    k = max(1, int(k))
    if flt is not None and flt.active:
        index = filtered_view(catalog, index, row, flt, strategy)
    exclude = (
        frozenset()
        if exclude_image is None
        else frozenset([exclude_image] if isinstance(exclude_image, int) else exclude_image)
    )
    # Regions and video frames put several hits on one file (a long video can fill the whole first
    # page with its frames), and deleted files may still be in the index until the next sync.
    # Over-fetch, and fetch 4x more while fewer than k distinct live results remain and the index
    # has more to give (below the threshold, when there is one).
    query = np.atleast_2d(query).astype(np.float32)
    results = _ranked(
        index,
        k,
        k * 4 + 16,
        threshold,
        lambda fetch: _collect(catalog, index, row, query, fetch, k, threshold, exclude, merge_gap),
    )
    with_meta(catalog, results)
    if sort == "date":
        by_date(results)
    return results


def filtered_view(catalog: Catalog, index, row: IndexRow, flt: Filter, strategy: str = "auto"):
    """`index` seen through the ids that pass `flt` (indexes/filtered.py): exact where the index
    cannot reach them, with the stored vectors of this index's model; a Milvus collection
    evaluates what it can of the filter itself."""
    from pixquery.indexes.filtered import FilteredIndex, allowed_mask

    refs = catalog.filter_refs(row.id, flt)
    model = catalog.model(row.model_id)

    def exact(ids: np.ndarray) -> np.ndarray:
        items = catalog.resolve(row.id, ids.tolist())
        out = np.zeros((len(ids), model.dim), np.float32)  # gone since: scores 0, dropped later
        live = [n for n, ref in enumerate(ids.tolist()) if ref in items]
        if live:
            found = [items[int(ids[n])] for n in live]
            out[live] = catalog.vectors_for(model.id, [(it.image_id, it.detection_id) for it in found], model.dim)
        return out

    expression = flt.milvus_expression() if getattr(index, "kind", "") == "milvus" else ""
    return FilteredIndex(
        index, allowed_mask(refs, row.next_ref_id), strategy=strategy, exact=exact, expression=expression
    )


def by_date(results: Results) -> None:
    """Order results by date taken, oldest first (undated last), and number them again."""
    results.sort(key=lambda r: (r.taken is None, r.taken or "", -r.score))
    for n, r in enumerate(results, 1):
        r.rank = n


def with_meta(catalog: Catalog, results: list[SearchResult]) -> None:
    """Fill in date taken, place and camera of each result (its photo's or video's)."""
    from pixquery.ingest.metadata import wall_datetime

    images, videos = catalog.meta_of(
        [r.image_id for r in results if r.image_id is not None and r.video_id is None],
        [r.video_id for r in results if r.video_id is not None],
    )
    for r in results:
        m = videos.get(r.video_id) if r.video_id is not None else images.get(r.image_id)
        if not m:
            continue
        if m["taken"] is not None:
            r.taken = wall_datetime(m["taken"]).isoformat(timespec="seconds")
            r.taken_source = m["taken_source"]
        r.lat, r.lon = m["lat"], m["lon"]
        make, model = m["make"] or "", m["model"] or ""
        r.camera = (model if make and model.lower().startswith(make.lower()) else f"{make} {model}").strip() or None


def run_store_query(index, query: np.ndarray, k: int, threshold: float | None = None) -> Results:
    """A store-only library (ingest/store_only.py): no catalog rows, so each hit's path, width and
    height are read from the collection itself (`index.get`). One result per path, best first (a
    photo imported from two embed runs has two vectors). Fetches as run_query does, so that the
    count the threshold dropped means the same."""
    k = max(1, int(k))
    query = np.atleast_2d(query).astype(np.float32)
    return _ranked(index, k, k * 4 + 16, threshold, lambda fetch: _collect_from_store(index, query, fetch, threshold))


def _ranked(index, k: int, first_fetch: int, threshold: float | None, collect) -> Results:
    """Ask `collect(fetch)` for the best `fetch` hits as results; fetch 4x more while fewer than k
    results come back and the index has more (below the threshold, when there is one)."""
    size = len(index)
    fetch = min(size, first_fetch)
    if fetch == 0:
        return Results([], 0, threshold)
    while True:
        results, dropped, past_threshold = collect(fetch)
        if len(results) >= k or fetch >= size or past_threshold:
            break
        fetch = min(size, fetch * 4)
    results = results[:k]
    for n, r in enumerate(results, 1):
        r.rank = n
    return Results(results, dropped, threshold)


def _collect_from_store(
    index, query: np.ndarray, fetch: int, threshold: float | None
) -> tuple[list[SearchResult], int, bool]:
    scores, ids = index.search(query, fetch)
    hits = [(s, i) for s, i in zip(scores[0].tolist(), ids[0].tolist()) if i >= 0]
    files = index.get([i for _, i in hits], ("path", "width", "height"))
    seen: set[str] = set()
    results: list[SearchResult] = []
    dropped = 0
    for score, vid in hits:
        f = files.get(vid)
        if f is None or not f.get("path") or f["path"] in seen:
            continue  # removed since the search, or a second vector of a file already listed
        seen.add(f["path"])
        dist = angular_distance(score)
        if threshold is not None and dist > threshold:
            dropped += 1
            continue
        results.append(
            SearchResult(
                rank=0,
                score=float(score),
                distance=dist,
                path=f["path"],
                width=f.get("width") or None,
                height=f.get("height") or None,
            )
        )
    past = threshold is not None and bool(hits) and angular_distance(hits[-1][0]) > threshold
    return results, dropped, past


def _collect(
    catalog: Catalog,
    index,
    row: IndexRow,
    query: np.ndarray,
    fetch: int,
    k: int,
    threshold: float | None,
    exclude: frozenset,
    merge_gap: float,
) -> tuple[list[SearchResult], int, bool]:
    """The best `fetch` hits as results (one per photo, video hits merged, live files only, best
    first; with paths read for the first k of them only), how many the threshold dropped, and
    whether the hits went past the threshold."""
    from pixquery.ingest.video import merge_video_hits

    scores, refs = index.search(query, fetch)
    scores, refs = scores[0], refs[0]
    items = catalog.resolve(row.id, [int(r) for r in refs if r >= 0])
    det_ids = [it.detection_id for it in items.values() if it.detection_id is not None]
    detections = catalog.detections(det_ids)
    best: dict[tuple, SearchResult] = {}
    order: list[tuple] = []
    dropped = 0
    for score, ref in zip(scores.tolist(), refs.tolist()):
        item = items.get(ref)
        if item is None:
            continue
        dist = angular_distance(score)
        if item.image_id is not None:
            key = ("image", item.image_id)
            hit = dict(image_id=item.image_id)
        else:
            d = detections.get(item.detection_id)
            if d is None:
                continue
            image_id, video_id, ts, box = d.image_id, d.video_id, d.timestamp, d.box
            key = ("image", image_id) if image_id is not None else ("video", video_id, item.detection_id)
            hit = dict(
                image_id=image_id,
                video_id=video_id,
                detection_id=item.detection_id,
                timestamp=ts,
                box=None if box == (0.0, 0.0, 1.0, 1.0) else box,
            )
        if hit.get("image_id") in exclude:
            continue
        if key in best:
            continue  # hits come best first: the first one of a file is its best
        if threshold is not None and dist > threshold:
            dropped += 1
            continue
        best[key] = SearchResult(rank=0, score=float(score), distance=dist, path="", **hit)
        order.append(key)
    results = merge_video_hits([best[key] for key in order], merge_gap)
    past = threshold is not None and len(scores) > 0 and angular_distance(scores[-1]) > threshold
    return _with_paths(catalog, results, k), dropped, past


def _with_paths(catalog: Catalog, results: list[SearchResult], k: int) -> list[SearchResult]:
    """The first k of `results` whose file is still there, with path, width and height filled in.
    Reads the rows of those k (and of as many more as turn out gone), not of every over-fetched
    hit: for k=10 search fetches 56 hits, and reading all their rows was most of the catalog time."""
    out: list[SearchResult] = []
    start = 0
    while len(out) < k and start < len(results):
        batch = results[start : start + k - len(out)]
        start += len(batch)
        images = catalog.images([r.image_id for r in batch if r.image_id is not None])
        videos = catalog.live_videos([r.video_id for r in batch if r.video_id is not None])
        for r in batch:
            if r.image_id is not None and r.image_id in images:
                img = images[r.image_id]
                if not img.deleted:
                    r.path, r.width, r.height = img.path, img.width, img.height
            elif r.video_id is not None and r.video_id in videos:
                r.path, r.width, r.height = videos[r.video_id]
            if r.path:
                out.append(r)
    return out


# -- the text side (OCR) -------------------------------------------------------------------


def _matched(lines) -> list[dict]:
    """Lines of text (catalog.text.TextLine) as a result shows them: {text, box, score}, and for a
    video's line {timestamp, timestamp_end}: the frames it is on screen."""
    out = []
    for ln in lines:
        m = {
            "text": ln.text,
            "box": tuple(round(v, 4) for v in ln.box),
            "score": None if ln.score is None else round(float(ln.score), 4),
        }
        if getattr(ln, "timestamp", None) is not None:
            m["timestamp"] = ln.timestamp
            m["timestamp_end"] = ln.timestamp_end
        out.append(m)
    return out


def _text_hit_fields(h) -> dict:
    """The SearchResult fields of a text hit's photo or video (and the time its words are on screen)."""
    if getattr(h, "video_id", None) is None:
        return {"image_id": h.image_id}
    return {"video_id": h.video_id, "timestamp": h.timestamp, "time_range": h.time_range}


def text_only_results(catalog: Catalog, hits: list, k: int) -> Results:
    """Text hits as results (`--text-only`): score is the share of the query's words found
    (text_search.py), distance 1 - score; no model is loaded."""
    results = [
        SearchResult(
            rank=0,
            score=round(h.score, 6),
            distance=round(1.0 - h.score, 6),
            path="",
            found_by="text",
            matched=_matched(h.lines),
            **_text_hit_fields(h),
        )
        for h in hits
    ]
    results = _with_paths(catalog, results, k)
    for n, r in enumerate(results, 1):
        r.rank = n
    return Results(results)


def _video_result_of(semantic: Results, hit, gap: float) -> int | None:
    """The position of the semantic result of `hit`'s video (a text hit) whose time span meets the
    span the hit's words are on screen (within `gap` seconds), if any: the same moment, found by
    both sides."""
    s, e = hit.time_range or (hit.timestamp, hit.timestamp)
    for n, r in enumerate(semantic):
        if r.video_id == hit.video_id and r.timestamp is not None:
            a, b = r.time_range or (r.timestamp, r.timestamp)
            if s is None or (s <= b + gap and a <= e + gap):
                return n
    return None


def fuse_with_text(
    catalog: Catalog,
    semantic: Results,
    hits: list,
    k: int,
    cosine_of,
    demoted: dict[int, list] | None = None,
    *,
    frame_cosine_of=None,
    merge_gap: float | None = None,
    held=None,
) -> Results:
    """The semantic results and the text hits of one query fused into one ranking (fusion.py),
    each result saying which side found it and the lines that matched. `cosine_of(image_ids)`
    gives the query's cosine with those photos' stored embeddings, so a photo found by its text
    alone still shows a real score and distance; `frame_cosine_of(video_id, timestamp)` the same
    for a video found by its text (its frame nearest the words). A video's text hit and its
    semantic result are one when their time spans meet (within `merge_gap`); the result then
    points at where the words are on screen (timestamp and time range). The threshold applies
    to the semantic side only: text found in a photo or video is evidence of its own.
    `demoted`: photos whose text holds a subtracted phrase -> those lines
    (text_search.holding_phrases), listed after all the others; `held`: the same for videos,
    asked at the moment each video result points at (text_search.HeldInVideos: the text hits' own
    moments are the caller's to leave out, as photos holding a phrase are)."""
    from pixquery.fusion import TEXT_WEIGHT, fuse
    from pixquery.ingest.video import DEFAULT_MERGE_GAP

    demoted = demoted or {}
    gap = DEFAULT_MERGE_GAP if merge_gap is None else merge_gap
    by_key: dict = {}
    sem_list = []
    for n, r in enumerate(semantic):
        key = ("image", r.image_id) if r.image_id is not None and r.video_id is None else ("result", n)
        by_key[key] = r
        sem_list.append((key, 1.0))
    text_hit: dict = {}
    for h in hits:
        key = h.key
        if h.video_id is not None:
            n = _video_result_of(semantic, h, gap)
            key = ("result", n) if n is not None else key
        text_hit[key] = h
    held_videos: dict = {}  # the key of a video result -> the lines on screen then holding a subtracted phrase
    for n, r in enumerate(semantic):
        if held and r.video_id is not None:
            h = text_hit.get(("result", n))
            # the moment the result will point at: where its words are when the text side found it too
            lines = held.at(
                r.video_id,
                *((h.timestamp, h.time_range) if h and h.timestamp is not None else (r.timestamp, r.time_range)),
            )
            if lines:
                held_videos[("result", n)] = lines
                text_hit.pop(("result", n), None)  # not a text hit, as a photo holding it is not
    text_list = [(key, h.score) for key, h in text_hit.items()]
    fused = fuse(
        {"semantic": sem_list, "text": text_list},
        weights={"text": TEXT_WEIGHT},
        demoted={("image", image_id) for image_id in demoted} | set(held_videos),
    )[: max(1, k)]
    missing = [f.key[1] for f in fused if f.key not in by_key and f.key[0] == "image"]
    cosines = cosine_of(missing) if missing else {}
    results: list[SearchResult] = []
    for f in fused:
        r = by_key.get(f.key)
        h = text_hit.get(f.key)
        if r is None and f.key[0] == "video":
            cos = frame_cosine_of(h.video_id, h.timestamp or 0.0) if frame_cosine_of else None
            if cos is None:
                continue  # no frame embedded with this model: not searchable with it
            r = SearchResult(rank=0, score=float(cos), distance=angular_distance(cos), path="", **_text_hit_fields(h))
        elif r is None:
            cos = cosines.get(f.key[1])
            if cos is None:
                continue  # not embedded with this model yet (a library shared by models): not searchable
            r = SearchResult(rank=0, score=float(cos), distance=angular_distance(cos), path="", image_id=f.key[1])
        elif h is not None and h.video_id is not None and h.timestamp is not None:
            # Found by both: point at where the words are on screen (the thumbnail shows them, the
            # player starts there), as precise as the words are; the semantic span may be a scene.
            r.timestamp, r.time_range, r.box = h.timestamp, h.time_range, None
        r.found_by = "+".join(name for name in ("semantic", "text") if name in f.ranks)
        if h is not None:
            r.matched = _matched(h.lines)
        if f.key[0] == "image" and f.key[1] in demoted:
            r.demoted_by = _matched(demoted[f.key[1]])
        elif f.key in held_videos:
            r.demoted_by = _matched(held_videos[f.key])
        results.append(r)
    _with_paths(catalog, [r for r in results if not r.path], len(results))  # fills them in; gone files stay ""
    results = [r for r in results if r.path]
    for n, r in enumerate(results, 1):
        r.rank = n
    return Results(results, semantic.dropped, semantic.threshold)
