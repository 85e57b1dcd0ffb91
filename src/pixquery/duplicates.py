"""Duplicate photos: exact copies (the same bytes: one content hash) and near-duplicates (embeddings
closer than a threshold: resized, recompressed, re-saved copies), grouped, with the one to keep.

pixquery never deletes anything: this only says which photos are copies of which.

How near-duplicates are found without comparing all pairs (10^12 pairs for a million photos):
a range search (every photo's neighbours within the radius) on an inverted-file index (faiss
IndexIVFFlat, inner product) built for this run from the stored embeddings, not on the library's
search index, whose kind (annoy, a remote Milvus, ...) may have no range search. Each query scans
only the `nprobe` cells nearest to it; near-duplicates sit far closer to each other than to any
cell boundary's other side, so few cells suffice (bench/duplicates.py measures the recall). Up to
EXACT_MAX photos the range search is exact (IndexFlatIP). The pairs found become groups by
connected components (union-find; scipy.sparse.csgraph), together with the content-hash twins.
Grouping is single-linkage: A~B and B~C put A and C in one group even if A and C are farther apart
than the threshold; with a tight threshold such chains are short (the member list gives each
photo's distance to the one suggested to keep).

The threshold is an angular distance (arccos(cosine) / pi, as everywhere in pixquery).
DEFAULT_THRESHOLD is an assumption for real CLIP weights, not a measurement (no real CLIP image
weights could be run where this was written): see docs/duplicates.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from pixquery.errors import PixqueryError

# Angular distance 0.10 = cosine 0.951. Assumed, for CLIP ViT-B/32 image embeddings: a resized or
# recompressed copy keeps cosine >= ~0.95 with its original; different photos of one scene (a
# burst) are ~0.9 and below. The tiny random-weight test model gives other numbers (docs/duplicates.md).
DEFAULT_THRESHOLD = 0.10
KEEP_RULES = ("largest", "oldest", "newest", "shortest-path")
EXACT_MAX = 20_000  # up to this many photos the range search compares every pair (a second or so)
DEFAULT_NPROBE = 8
CELL = 100  # photos per cell of the inverted file beyond EXACT_MAX
QUANTIZER_EF = 64  # HNSW search list when finding a photo's nearest cells
BATCH = 8192  # queries per range-search call: progress granularity, bounded memory for results


def cosine_of(threshold: float) -> float:
    """The cosine similarity at an angular distance."""
    return math.cos(math.pi * float(threshold))


def check_threshold(threshold: float | None) -> float:
    if threshold is None:
        return DEFAULT_THRESHOLD
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise PixqueryError(
            f"the near-duplicate threshold is an angular distance between 0 and 1, not {threshold!r}"
        ) from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise PixqueryError(f"the near-duplicate threshold is an angular distance between 0 and 1, not {threshold}")
    return value


def check_keep(rule: str) -> str:
    if rule not in KEEP_RULES:
        raise PixqueryError(f"--keep must be one of {', '.join(KEEP_RULES)}, not {rule!r}")
    return rule


# -- near pairs ----------------------------------------------------------------------------------


def near_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    nprobe: int | None = None,
    nlist: int | None = None,
    exact_max: int = EXACT_MAX,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Pairs (i, j), i < j, of rows of `vectors` (unit norm) at angular distance <= threshold, by a
    range search; and how they were searched ("exact" or "ivf nlist=N nprobe=P"): exact up to
    `exact_max` vectors. progress(done, total): vectors searched (exact: n in all), or placed in
    their cells and then searched (ivf: 2n in all)."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape if x.ndim == 2 else (0, 0)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), "exact"
    # faiss keeps scores strictly above the radius: a hair lower keeps pairs exactly at the threshold.
    radius = cosine_of(threshold) - 1e-6
    firsts, seconds = [], []

    def collect(lo: int, lims: np.ndarray, found: np.ndarray) -> None:
        query = np.repeat(np.arange(lo, lo + len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64))
        keep = query < found  # each pair once (the other half is found from the other side), never self
        firsts.append(query[keep])
        seconds.append(found[keep].astype(np.int64))

    if n <= exact_max:
        index = faiss.IndexFlatIP(dim)
        index.add(x)
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            lims, _, found = index.range_search(x[lo:hi], radius)
            collect(lo, lims, found)
            if progress:
                progress(hi, n)
        return np.concatenate(firsts), np.concatenate(seconds), "exact"

    from faiss.contrib.ivf_tools import add_preassigned, range_search_preassigned

    # Cells of ~CELL photos around photos drawn at random (no k-means: the partition only has to
    # put a photo's near-copies in one of its nprobe nearest cells, and k-means on 10^4 cells of a
    # million photos would take longer than the search), found through a small HNSW graph.
    nlist = int(nlist or max(64, n // CELL))
    nprobe = min(int(nprobe or DEFAULT_NPROBE), nlist)
    rng = np.random.default_rng(0)
    quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    quantizer.add(x[np.sort(rng.choice(n, size=nlist, replace=False))])
    # The graph's search list: at 32, 0.27% of planted copies at 300k photos were assigned to a cell
    # their original never looked in; at 64 0.03% (as at 128), for 17% more time (bench/results/duplicates.md).
    quantizer.hnsw.efSearch = max(QUANTIZER_EF, 2 * nprobe)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = nprobe
    # Each photo's nprobe nearest cells, found once: the first is where it is stored, all of them
    # are where its neighbours are looked for.
    cells = np.empty((n, nprobe), np.int64)
    cell_sims = np.empty((n, nprobe), np.float32)
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        cell_sims[lo:hi], cells[lo:hi] = quantizer.search(x[lo:hi], nprobe)
        if progress:
            progress(hi, 2 * n)
    add_preassigned(index, x, np.ascontiguousarray(cells[:, 0]))
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        lims, _, found = range_search_preassigned(index, x[lo:hi], radius, cells[lo:hi], cell_sims[lo:hi])
        collect(lo, lims, found)
        if progress:
            progress(n + hi, 2 * n)
    return (
        np.concatenate(firsts),
        np.concatenate(seconds),
        f"ivf nlist={nlist} nprobe={nprobe} ef={quantizer.hnsw.efSearch}",
    )


def connected_groups(n: int, first: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
    """The connected components of n nodes joined by edges (first[k], second[k]) that have two
    or more nodes, as arrays of node numbers."""
    if len(first) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    sorted_labels = label[order]
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    return [g for g in np.split(order, cuts) if len(g) > 1]


# -- groups ----------------------------------------------------------------------------------------


@dataclass
class Member:
    image_id: int
    path: str
    size: int  # bytes
    width: int | None
    height: int | None
    date: float  # seconds: when it was taken (EXIF / the video's container, wall clock there) or else modified (unix)
    sha256: str | None
    distance: float | None = None  # angular distance to the photo to keep (None: no embedding)
    keep: bool = False  # the one suggested to keep
    same_content_as_keep: bool = False  # the very same bytes as the one to keep
    date_source: str = "modified"  # "taken" (the file says when) or "modified" (its mtime)
    mtime: float | None = None  # unix seconds, as indexed

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    def to_dict(self) -> dict:
        out = asdict(self)
        when = datetime.fromtimestamp(self.date, timezone.utc)
        # a date taken is the wall clock where it was taken (no zone); a modification time is UTC
        out["date_iso"] = (when.replace(tzinfo=None) if self.date_source == "taken" else when).isoformat(
            timespec="seconds"
        )
        return out


@dataclass
class Group:
    kind: str  # "exact": every member is the same bytes; "near": some differ
    members: list[Member]  # the one to keep first, then by distance to it

    @property
    def keep(self) -> Member:
        return self.members[0]

    @property
    def bytes(self) -> int:
        return sum(m.size for m in self.members)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "count": len(self.members),
            "keep": self.keep.path,
            "bytes": self.bytes,
            "reclaimable_bytes": self.bytes - self.keep.size,
            "members": [m.to_dict() for m in self.members],
        }


@dataclass
class DuplicateReport:
    groups: list[Group]
    threshold: float
    keep_rule: str
    photos: int  # photos with an embedding that were compared
    method: str  # how the near pairs were searched
    seconds: float
    near: bool = True  # whether near-duplicates were searched (False: exact copies only)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "threshold_cosine": round(cosine_of(self.threshold), 6),
            "keep_rule": self.keep_rule,
            "near": self.near,
            "photos": self.photos,
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "groups_count": len(self.groups),
            "duplicates": sum(len(g.members) - 1 for g in self.groups),
            "reclaimable_bytes": sum(g.bytes - g.keep.size for g in self.groups),
            "notes": self.notes,
            "groups": [g.to_dict() for g in self.groups],
        }


def keep_order(rule: str) -> Callable[[Member], tuple]:
    """A sort key: the member to keep sorts first. Ties fall back to the oldest, then the path."""
    rule = check_keep(rule)
    if rule == "largest":
        return lambda m: (-m.pixels, -m.size, m.date, m.path)
    if rule == "oldest":
        return lambda m: (m.date, -m.pixels, m.path)
    if rule == "newest":
        return lambda m: (-m.date, -m.pixels, m.path)
    return lambda m: (len(m.path), m.path)  # shortest-path


def make_group(members: Sequence[Member], vectors: dict[int, np.ndarray], rule: str) -> Group:
    """Order the members (the one to keep first, then nearest to it) and fill in distances."""
    ordered = sorted(members, key=keep_order(rule))
    keep = ordered[0]
    keep.keep = True
    anchor = vectors.get(keep.image_id)
    for m in ordered:
        m.same_content_as_keep = m.sha256 is not None and m.sha256 == keep.sha256
        v = vectors.get(m.image_id)
        if anchor is not None and v is not None:
            m.distance = round(math.acos(max(-1.0, min(1.0, float(anchor @ v)))) / math.pi, 6)
    ordered[1:] = sorted(ordered[1:], key=lambda m: (m.distance if m.distance is not None else 2.0, m.path))
    kind = "exact" if all(m.same_content_as_keep for m in ordered) else "near"
    return Group(kind, ordered)


def group_ids(
    photo_ids: np.ndarray, first: np.ndarray, second: np.ndarray, twins: Sequence[Sequence[int]]
) -> list[list[int]]:
    """Groups of image ids joined by near pairs (positions into photo_ids) or by a shared hash."""
    nodes = np.unique(np.concatenate([photo_ids.astype(np.int64)] + [np.asarray(t, np.int64) for t in twins]))
    at = np.searchsorted(nodes, photo_ids)
    edges_a, edges_b = [at[first]], [at[second]]
    for t in twins:  # a star joins every copy to the first
        pos = np.searchsorted(nodes, np.asarray(t, np.int64))
        edges_a.append(np.full(len(pos) - 1, pos[0]))
        edges_b.append(pos[1:])
    groups = connected_groups(len(nodes), np.concatenate(edges_a), np.concatenate(edges_b))
    return [nodes[g].tolist() for g in groups]


def _member(row, meta: dict | None) -> Member:
    """A group member from its image row and its media_meta row: dated by when it was taken when
    the file says so, else by its modification time."""
    mtime = row.mtime_ns / 1e9
    taken = meta.get("taken") if meta else None
    if taken and meta.get("taken_source") not in (None, "mtime"):
        date, source = float(taken), "taken"
    else:
        date, source = mtime, "modified"
    return Member(row.id, row.path, row.size, row.width, row.height, date, row.sha256, date_source=source, mtime=mtime)


def find_duplicates(
    catalog,
    model_row,
    *,
    threshold: float | None = None,
    keep: str = "largest",
    near: bool = True,
    nprobe: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> DuplicateReport:
    """Every group of copies in the library, largest group first. model_row: the model whose
    embeddings say what is near (None: exact copies only). progress(stage, done, total)."""
    threshold = check_threshold(threshold)
    keep = check_keep(keep)
    t0 = time.perf_counter()
    say = progress or (lambda stage, done, total: None)
    twins = catalog.content_twins()
    notes: list[str] = []
    if near and model_row is not None and model_row.dim:
        say("reading embeddings", 0, 0)
        photo_ids, vectors = catalog.photo_embeddings(model_row.id, model_row.dim)
        first, second, method = near_pairs(
            vectors, threshold, nprobe=nprobe, progress=lambda d, t: say("comparing", d, t)
        )
    else:
        if near:
            notes.append("no embeddings of this library's model yet: exact copies only")
        photo_ids, vectors = np.empty(0, np.int64), np.empty((0, 0), np.float32)
        first = second = np.empty(0, np.int64)
        method = "content hash only"
    id_groups = group_ids(photo_ids, first, second, twins)
    member_ids = [i for g in id_groups for i in g]
    rows = catalog.images(member_ids)
    meta = catalog.meta_of(member_ids)[0]  # date taken, where the file says (EXIF, a video's container)
    order = np.argsort(photo_ids, kind="stable")  # photo_ids come sorted; this keeps it right if not
    sorted_ids = photo_ids[order]

    def vector_of(image_id: int) -> np.ndarray | None:
        at = int(np.searchsorted(sorted_ids, image_id))
        return vectors[order[at]] if at < len(sorted_ids) and sorted_ids[at] == image_id else None

    groups = []
    for ids in id_groups:
        members = [_member(r, meta.get(r.id)) for r in (rows.get(i) for i in ids) if r is not None and not r.deleted]
        if len(members) < 2:
            continue
        vecs = {m.image_id: v for m in members if (v := vector_of(m.image_id)) is not None}
        groups.append(make_group(members, vecs, keep))
    groups.sort(key=lambda g: (-len(g.members), -g.bytes, g.keep.path))
    return DuplicateReport(
        groups,
        threshold,
        keep,
        int(len(photo_ids)),
        method,
        time.perf_counter() - t0,
        near=bool(near and model_row is not None),
        notes=notes,
    )


# -- collapsing search results ---------------------------------------------------------------------


def collapse_results(results: list, vectors: dict[int, np.ndarray], threshold: float) -> list:
    """Search results (best first) with each near-duplicate of a better result folded into it:
    the better one lists the paths in `duplicates`. Results without a photo embedding (videos,
    store-only hits) are never folded."""
    cos = cosine_of(threshold) - 1e-6
    kept: list = []
    anchors: list[np.ndarray] = []
    owners: list = []
    for r in results:
        v = vectors.get(r.image_id) if r.image_id is not None and r.video_id is None else None
        if v is not None and anchors:
            sims = np.stack(anchors) @ v
            best = int(np.argmax(sims))
            if sims[best] >= cos:
                owner = owners[best]
                owner.duplicates = (owner.duplicates or []) + [r.path]
                continue
        kept.append(r)
        if v is not None:
            anchors.append(v)
            owners.append(r)
    return kept
