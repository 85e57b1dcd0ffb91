"""The write stage: embedded items into the catalog, one transaction per batch.

A photo: its `image` row (file version, content hash, size) and metadata (date taken, GPS, camera), this model's embedding of the whole
picture (tied to that file version), its regions as detections and, when the decode worker read
it (OCR on), its text lines (replacing what an older version of the file said). A video: its `video` row and
its frames (and their regions) as detections, replacing the old ones, and, when its decode process
read it (OCR on), the text of its frames (ingest/video_text.py), in the same transaction. A killed run keeps every
batch it committed; the next run finds those files done and embeds only the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from pixquery import _failpoints
from pixquery.catalog import Catalog
from pixquery.ingest.crops import REGION_KINDS, WHOLE
from pixquery.ingest.items import VIDEO, EmbeddedItem
from pixquery.ingest.regions import drop_regions_of_changed, store_detections

VIDEO_KINDS = ("frame", "tile", "detector")


@dataclass
class WriteCounts:
    photos: int = 0  # whole-photo embeddings written
    regions: int = 0  # region embeddings (tiles, detector boxes) of photos and frames
    videos: int = 0
    frames: int = 0
    video_seconds: float = 0.0
    decoded_frames: int = 0
    total_frames: int = 0
    decode_seconds: float = 0.0
    text_photos: int = 0  # photos whose text the decode workers read (OCR on)
    text_lines: int = 0
    text_seconds: float = 0.0  # the workers' time reading it, summed
    text_videos: int = 0  # videos whose frames' text the decode processes read (OCR on)
    text_video_frames: int = 0
    text_video_lines: int = 0  # text rows stored: one per line and run of frames
    text_video_seconds: float = 0.0


class CatalogWriter:
    """`writer(items)`: store a batch of embedded items for one model, all or nothing."""

    def __init__(self, catalog: Catalog, model_id: int, ocr_key: str | None = None):
        """ocr_key: the OCR settings (OcrConfig.to_json(), resolved) the workers read text with."""
        self.catalog, self.model_id, self.ocr_key = catalog, model_id, ocr_key
        self.counts = WriteCounts()

    def __call__(self, items: list[EmbeddedItem]) -> None:
        cat, counts = self.catalog, WriteCounts()
        with cat.transaction():
            photos = [e for e in items if e.item.kind != VIDEO]
            # Before the rows change: a changed photo must not keep the old photo's regions.
            drop_regions_of_changed(cat, [e.item for e in photos])
            restale = []
            for e in photos:
                it = e.item
                image_id = cat.upsert_image(it.path, it.size, it.mtime_ns, e.sha256, e.width, e.height)
                if e.info and e.info.get("meta"):
                    cat.put_meta(e.info["meta"], image_id=image_id)
                regions = [n for n, r in enumerate(e.regions) if r.kind in REGION_KINDS]
                for n, r in enumerate(e.regions):
                    if r.kind == WHOLE:
                        cat.put_image_embedding(
                            self.model_id, image_id, e.vectors[n], source=(it.size, it.mtime_ns, e.sha256)
                        )
                        restale.append(image_id)
                        counts.photos += 1
                if regions:
                    store_detections(
                        cat,
                        self.model_id,
                        image_id=image_id,
                        regions=[e.regions[n] for n in regions],
                        vectors=e.vectors[regions],
                        kinds=REGION_KINDS,
                        reuse=True,
                    )
                    counts.regions += len(regions)
                if e.text is not None and self.ocr_key is not None:
                    cat.replace_photo_text(
                        image_id,
                        [(b.text, b.box, b.score) for b in e.text],
                        size=it.size,
                        mtime_ns=it.mtime_ns,
                        config=self.ocr_key,
                        seconds=e.text_seconds,
                    )
                    counts.text_photos += 1
                    counts.text_lines += len(e.text)
                    counts.text_seconds += e.text_seconds
            cat.mark_stale(image_ids=restale)
            for e in items:
                if e.item.kind == VIDEO:
                    self._video(e, counts)
        _failpoints.hit("after_batch_commit")
        for f in counts.__dataclass_fields__:  # only once committed
            setattr(self.counts, f, getattr(self.counts, f) + getattr(counts, f))

    def _video(self, e: EmbeddedItem, counts: WriteCounts) -> None:
        it, info = e.item, e.info or {}
        video_id = self.catalog.upsert_video(
            it.path,
            it.size,
            it.mtime_ns,
            width=info.get("width", e.width),
            height=info.get("height", e.height),
            duration=info.get("duration"),
            fps=info.get("fps"),
            frame_count=info.get("frame_count"),
        )
        if info.get("meta"):
            self.catalog.put_meta(info["meta"], video_id=video_id)
        store_detections(
            self.catalog,
            self.model_id,
            video_id=video_id,
            regions=e.regions,
            vectors=e.vectors,
            kinds=VIDEO_KINDS,
            reuse=it.reuse,
        )
        if self.ocr_key is not None and e.text is not None:
            frames = info.get("text_frames", 0)
            self.catalog.replace_video_text(
                video_id,
                [run.row() for run in e.text],
                size=it.size,
                mtime_ns=it.mtime_ns,
                config=self.ocr_key,
                frames=frames,
                seconds=e.text_seconds,
            )
            counts.text_videos += 1
            counts.text_video_frames += frames
            counts.text_video_lines += len(e.text)
            counts.text_video_seconds += e.text_seconds
        elif not it.reuse:  # changed: the old file's text must not stay (the OCR pass reads it, when on)
            self.catalog.forget_video_text(video_id)
        counts.videos += 1
        counts.frames += sum(1 for r in e.regions if r.kind == "frame")
        counts.regions += sum(1 for r in e.regions if r.kind != "frame")
        counts.video_seconds += info.get("duration") or 0.0
        counts.decoded_frames += info.get("decoded_frames", 0)
        counts.total_frames += info.get("total_frames", 0)
        counts.decode_seconds += info.get("decode_seconds", 0.0)
