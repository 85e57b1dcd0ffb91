"""Sources: what an index run must do, as a list of media items (the plan).

The photo and video files under the roots are compared with the catalog (ingest/scan.py: size and
mtime per file; a change seen by any model is seen by all, because each stored embedding records
the file version it was made from). Each file that needs work becomes one MediaItem saying what:
the whole photo (this model has no embedding of its current version), its regions (regions are on
and this model has none for it), a video's frames. Files gone from disk are marked deleted here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from pixquery.catalog import Catalog
from pixquery.ingest import formats
from pixquery.ingest import scan as scanning
from pixquery.ingest import video as video_mod
from pixquery.ingest.crops import REGION_KINDS, RegionConfig
from pixquery.ingest.items import PHOTO, VIDEO, MediaItem


@dataclass
class Plan:
    items: list[MediaItem] = field(default_factory=list)  # photos first, then videos, each sorted
    found: int = 0  # photo and video files under the roots
    skipped: int = 0  # files with nothing to do for this model
    removed: int = 0  # files gone from disk (marked deleted)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable, unsupported
    regions_dropped: int = 0  # photos whose regions went because the region settings changed
    # Files of a format whose decoder plugin is not installed here, by format: (what is missing and
    # the install command, paths). Also in `failed`, each with that reason; reported once per format.
    missing_plugins: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    @property
    def to_embed(self) -> int:
        """Files whose own picture is (re-)embedded (photos' regions alone do not count)."""
        return sum(1 for i in self.items if i.whole)


def plan(
    catalog: Catalog,
    roots: Sequence[str],
    model_id: int,
    *,
    regions: RegionConfig | None,
    sampling: video_mod.SamplingConfig | None,
    videos: bool = True,
) -> Plan:
    """Scan `roots` and compare with the catalog: the items this model must embed. Marks files gone
    from disk (or now excluded) as deleted (soft: indexes drop them at their next sync) and applies
    the region settings (a change drops every photo's regions, to be made again)."""
    from pixquery.ingest.regions import apply_config

    out = Plan()
    excludes = catalog.folder_excludes()
    regions = regions.resolved() if regions else None
    out.regions_dropped = apply_config(catalog, regions)

    # photos
    photo_roots = [r for r in roots if os.path.isdir(r) or not video_mod.is_video_path(r)]
    known: dict = {}
    for root in photo_roots:
        known.update(catalog.images_under(root))
    scanned = scanning.scan(photo_roots, known, excludes=excludes)
    out.found, out.removed = scanned.found, len(scanned.deleted)
    out.failed.extend(scanned.errors)
    current = catalog.image_ids_with_current_embedding(model_id)
    lacking = {i for i, _ in catalog.photos_without_detections(model_id, REGION_KINDS)} if regions else set()
    problems: dict = {}  # format -> why it cannot be decoded here (None: it can), asked once per run

    def decodable(path: str) -> bool:
        fmt = formats.format_of(path)
        if fmt is None:
            return True
        if fmt not in problems:
            problems[fmt] = formats.missing(fmt)
        if problems[fmt] is None:
            return True
        out.missing_plugins.setdefault(fmt.name, (formats.fix(fmt, problems[fmt]), []))[1].append(path)
        out.failed.append((path, formats.not_decodable(fmt, problems[fmt])))
        return False

    for e in scanned.to_embed:  # new or changed
        if decodable(e.path):
            out.items.append(MediaItem(e.path, e.size, e.mtime_ns, PHOTO, whole=True, regions=regions is not None))
    for image_id, e in scanned.unchanged:
        whole, more = image_id not in current, image_id in lacking
        if (whole or more) and decodable(e.path):
            out.items.append(MediaItem(e.path, e.size, e.mtime_ns, PHOTO, whole=whole, regions=more, reuse=True))
    if scanned.deleted:
        with catalog.transaction():
            catalog.mark_deleted(scanned.deleted)

    # videos
    if videos:
        vs = video_mod.scan_videos(catalog, roots, excludes=excludes)
        out.found += vs.found
        out.removed += len(vs.deleted)
        out.failed.extend(vs.errors)
        if vs.deleted:
            with catalog.transaction():
                catalog.mark_videos_deleted(vs.deleted)
        sampling = sampling or video_mod.SamplingConfig()
        wanted = video_mod.config_json(sampling, regions)
        previous = catalog.get_setting(video_mod.SETTING_VIDEO)
        changed_config = previous is not None and previous != wanted
        have = catalog.video_ids_with_embedding(model_id)
        todo = [(e, False) for e in vs.to_embed]
        todo += [(e, not changed_config) for vid, e in vs.unchanged if changed_config or vid not in have]
        if todo and not video_mod.have_av():
            reason = "PyAV is not installed: pip install av to index videos"
            out.failed.extend((e.path, reason) for e, _ in todo)
        else:
            out.items.extend(MediaItem(e.path, e.size, e.mtime_ns, VIDEO, reuse=reuse) for e, reuse in todo)
    unsupported = sum(len(paths) for _, paths in out.missing_plugins.values())
    out.skipped = out.found - sum(1 for i in out.items if i.whole) - unsupported
    return out


def saved_after_run(catalog: Catalog, regions: RegionConfig | None, sampling, videos: bool) -> None:
    """Record the video settings the library's videos are now indexed with (after the run)."""
    if not videos:
        return
    wanted = video_mod.config_json(sampling or video_mod.SamplingConfig(), regions.resolved() if regions else None)
    if catalog.get_setting(video_mod.SETTING_VIDEO) != wanted:
        with catalog.transaction():
            catalog.set_setting(video_mod.SETTING_VIDEO, wanted)
