"""Regions in the catalog: which region settings a library uses, and storing a file's regions.

A whole-photo embedding describes the photo's main subject; "a cup on the table" in a wide shot
may not move it at all. Embedding overlapping crops at a few scales (and, for users who have one,
the boxes an object detector finds) makes small things findable, and tells where they are: every
region is a `detection` row with its relative box and one `embedding` row per model, added to the
ANN index like any photo. The crops themselves are cut by ingest/crops.py, in the decode workers,
from the same pixels as the whole photo; this module keeps the catalog side.

Detections are shared by all models (a box is a box), embeddings are per model. Rows that an index
still refers to cannot be deleted (index_image references them), so replacing a file's regions
"retires" the old rows: their embeddings go (every model's index drops them at its next sync, as
`live_items` no longer lists them) and the rows themselves are deleted by the catalog's
`purge_orphan_detections` once no index refers to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict

import numpy as np

from pixquery.catalog import Catalog
from pixquery.ingest.crops import Region, RegionConfig

SETTING_IMAGE_REGIONS = "image_regions"  # RegionConfig JSON the photo regions were made with


# -- settings -----------------------------------------------------------------------------


def saved_config(catalog: Catalog) -> RegionConfig | None:
    """The region settings this library's photo regions were last made with (None: regions off)."""
    return RegionConfig.from_json(catalog.get_setting(SETTING_IMAGE_REGIONS))


def choose_config(
    catalog: Catalog, enabled: bool | RegionConfig | None = None, detector: str | None = None
) -> RegionConfig | None:
    """The region settings for an index run, from the user's flags: `enabled` None keeps the
    library's (so a plain `pixquery index` never turns regions off), False turns them off, True
    turns them on (the saved settings, else the defaults), a RegionConfig uses it (other grids,
    overlap, detector score). A detector path turns them on with it."""
    saved = saved_config(catalog)
    if enabled is False:
        return None
    if isinstance(enabled, RegionConfig):
        saved, enabled = enabled, True
    if enabled is None and detector is None:
        return saved
    cfg = saved or RegionConfig()
    if detector is not None:
        cfg = RegionConfig(**{**asdict(cfg), "detector": detector or None, "detector_fingerprint": None})
    return cfg


def apply_config(catalog: Catalog, config: RegionConfig | None) -> int:
    """Make `config` (resolved) the library's photo region settings. When they differ from those
    the regions were made with, every photo's regions are dropped (to be made again, or not at
    all when off). Returns how many photos lost their regions."""
    previous = saved_config(catalog)
    if previous == config:
        return 0
    with catalog.transaction():
        removed = catalog.count_photos_with_detections()
        drop_image_regions(catalog)
        catalog.set_setting(SETTING_IMAGE_REGIONS, config.to_json() if config else "null")
    return removed


# -- storing detections -------------------------------------------------------------------


def store_detections(
    catalog: Catalog,
    model_id: int,
    *,
    image_id: int | None = None,
    video_id: int | None = None,
    regions: Sequence[Region],
    vectors: np.ndarray,
    kinds: Sequence[str],
    reuse: bool,
) -> list[int]:
    """Make the detections of `kinds` of one photo or video exactly `regions`, with `vectors` as
    this model's embeddings. Call inside a transaction. Returns the detection ids, in order.

    reuse=True (the file is unchanged and the config the same: another model got here first):
    rows with the same kind, timestamp, box and label keep their id and gain this model's vector,
    so no model's embeddings are lost. reuse=False (the file changed): every old row is retired.
    """
    assert (image_id is None) != (video_id is None)
    assert len(regions) == len(vectors)
    existing: dict[tuple, int] = {}
    for did, kind, ts, box, label in catalog.embedded_detections_of(image_id=image_id, video_id=video_id, kinds=kinds):
        existing.setdefault(Region(kind, box, ts, label).key(), did)
    ids, restale = [], []
    had = catalog.detection_ids_with_embedding(model_id, list(existing.values())) if reuse else set()
    for region, vector in zip(regions, vectors):
        did = existing.pop(region.key(), None) if reuse else None
        if did is None:
            did = catalog.add_detection(
                image_id=image_id,
                video_id=video_id,
                kind=region.kind,
                box=region.box,
                timestamp=region.timestamp,
                label=region.label,
            )
        elif did in had:
            restale.append(did)
        catalog.put_detection_embedding(model_id, did, vector)
        ids.append(did)
    if not reuse:
        catalog.retire_detections(list(existing.values()))
    if restale:
        catalog.mark_stale(detection_ids=restale)
    return ids


def drop_regions_of_changed(catalog: Catalog, entries: Iterable) -> int:
    """For the lead's per-batch `write()`, BEFORE `upsert_image`, in the same transaction: retire
    the regions of every photo whose file changed (size or mtime differ from the catalog's row), so
    a changed photo never keeps the old photo's regions, even if the run is killed before the
    regions pass. Unchanged photos (re-embedded for another model) keep theirs. `entries`: objects
    with .path, .size, .mtime_ns (scan.FileEntry). Returns how many photos lost regions."""
    changed = []
    for e in entries:
        row = catalog.image_by_path(e.path)
        if row and (row.size, row.mtime_ns) != (e.size, e.mtime_ns):
            changed.append(row.id)
    drop_image_regions(catalog, changed)
    return len(changed)


def drop_image_regions(catalog: Catalog, image_ids: Sequence[int] | None = None) -> None:
    """Retire the regions of these photos (all photos when None). Inside a transaction."""
    catalog.retire_detections(catalog.photo_detection_ids(image_ids))


__all__ = [
    "SETTING_IMAGE_REGIONS",
    "saved_config",
    "choose_config",
    "apply_config",
    "store_detections",
    "drop_regions_of_changed",
    "drop_image_regions",
]
