"""`Server`: the state behind the endpoints (one per app), and the `ServerDep` dependency that hands it to them.

Concurrency. FastAPI runs the (synchronous) endpoints in a thread pool. Text queries are
answered from an LRU of recent queries, or encoded by one worker thread that batches the queries
waiting at that moment (`TextEncoder`); the encoder is called outside any catalog lock.
Catalog and index reads go through a `LibraryPool`: `pool_size` Library objects, each with its
own SQLite connection and loaded index, handed to one thread at a time (a pool of one is a plain
lock). Each Library reloads its index when the catalog points at a new index file, so an index
run in another process is picked up by the next search, without a restart.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from pixquery import __version__
from pixquery import query as query_mod
from pixquery.errors import BadImage, IndexStoreError, LibraryError, PixqueryError
from pixquery.server import files, thumbnails
from pixquery.server.api_errors import ApiError
from pixquery.server.caches import TextEncoder, UploadCache
from pixquery.server.config import MAX_ID, ServerConfig
from pixquery.server.decoder import DecodeWorkers
from pixquery.server.pool import LibraryPool
from pixquery.server.static_page import static_files

log = logging.getLogger(__name__)

JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
MAX_EXTRA_PARTS = 32  # add + subtract + like + unlike of one search: each is an encode or a catalog read
BROWSER_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif", "image/x-ms-bmp"}


def map_url(lat: float | None, lon: float | None) -> str | None:
    """Where a photo was taken, on OpenStreetMap (a marker at the point, street-level zoom)."""
    if lat is None or lon is None:
        return None
    return f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=16/{lat:.6f}/{lon:.6f}"


class Server:
    """The state behind the endpoints (one per app)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        lib_path = Path(config.library).expanduser()
        from pixquery.api import CATALOG_FILE

        if not (lib_path / CATALOG_FILE).exists():
            raise LibraryError(f"no library at {lib_path}: run `pixquery index FOLDER --library {lib_path}` first")
        self.pool = LibraryPool(lib_path, config.model, config.pool_size)
        self.encoder = self.pool.encoder
        self.decoders = DecodeWorkers(config.thumbnail_concurrency) if config.decode_in_workers else None
        self.thumbs = thumbnails.Thumbnails(
            config.thumbnail_dir or lib_path / "thumbnails",
            concurrency=config.thumbnail_concurrency,
            workers=self.decoders,
        )
        self.uploads = UploadCache(config.upload_cache)
        self.texts = TextEncoder(self.encoder, config.text_cache, config.text_batch)
        self._upload_slots = threading.BoundedSemaphore(max(1, config.upload_concurrency))
        self.static = static_files(config.static_dir)
        self.started_at = time.time()
        if config.warm:
            self.warm_up()

    def warm_up(self) -> None:
        """Load both towers and every pooled Library's index now, not on the first request."""
        t0 = time.perf_counter()
        self.encoder.encode_texts(["a photo"])
        cfg = self.encoder.preprocess_cfg
        self.encoder.encode_images(np.zeros((1, 3, cfg.size, cfg.size), np.float32))
        if self.decoders is not None:
            self.decoders.warm()
        probe = np.zeros(self.encoder.dim, np.float32)
        probe[0] = 1.0
        for lib in self.pool.libraries:
            try:
                lib.search(vector=probe, k=1)
            except LibraryError as e:
                log.warning("%s (searches answer 503 until an index exists)", e)
                break
            except IndexStoreError as e:  # serve anyway: searches answer 503 until the store answers
                log.warning("%s (searches answer 503 until it answers)", e)
                break
        log.info("model and index loaded in %.2fs", time.perf_counter() - t0)

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        *,
        text: str | None = None,
        image_id: int | None = None,
        upload_id: str | None = None,
        vector: np.ndarray | None = None,
        k: int,
        offset: int,
        threshold: str | None,
        add: list[str] = (),
        subtract: list[str] = (),
        like: list[int] = (),
        unlike: list[int] = (),
        image_weight: float = 1.0,
        match: str = "both",
        filters: dict | None = None,
        sort: str = "score",
        collapse: bool = False,
        collapse_threshold: float | None = None,
    ) -> dict:
        """One page of results for a combined query (pixquery.query): the text `q` in the inline
        syntax, phrases added / subtracted, photos of the library liked / unliked, and one image
        (`image_id`, an upload, or a vector) weighted `image_weight`. match: "both" (meaning and, in
        a library with OCR, the text in photos, fused), "text" or "semantic" alone. `filters`:
        pixquery.filters.Filter.parse's keywords (after, before, folders, media, camera, near,
        within), from the query parameters; `sort`: score or date. collapse: near-duplicates (within
        collapse_threshold, default the server's duplicate_threshold) folded into the best of them
        (Library.search's collapse=)."""
        from pixquery.filters import Filter, check_sort

        t0 = time.perf_counter()
        cfg = self.config
        try:
            flt = Filter.parse(**(filters or {}))
            sort = check_sort(sort)
        except PixqueryError as e:
            raise ApiError(422, str(e)) from None
        if (
            text is None
            and not (add or subtract or like or unlike)
            and image_id is None
            and upload_id is None
            and vector is None
        ):
            raise ApiError(422, "give a query: q (text), add, subtract, like, unlike, image_id or upload_id")
        k = min(int(k), cfg.max_k)
        if offset >= cfg.max_results:
            raise ApiError(422, f"offset must be below {cfg.max_results} (the most results a search returns)")
        want = min(offset + k, cfg.max_results)
        th = self._parse_threshold(threshold)
        parts, query, (words, excluded_words) = self._query_parts(
            text, add, subtract, like, unlike, image_id, upload_id, vector, image_weight
        )
        photo_ids = {p.value for p in parts if p.kind == query_mod.IMAGE_ID}
        with self.pool.get() as lib:
            for pid in sorted(photo_ids):
                row = lib.catalog.image(pid)
                if row is None or row.deleted:
                    raise ApiError(404, f"no image with id {pid}")
            try:
                # the texts reach the Library encoded (cached): their words go beside for the text
                # side, the added ones to look for and the subtracted ones to leave out
                folded = (
                    (cfg.duplicate_threshold if collapse_threshold is None else collapse_threshold)
                    if collapse
                    else False
                )
                res = lib.search(
                    parts,
                    k=want + 1,
                    threshold=th,
                    text_terms=words,
                    excluded_text_terms=excluded_words,
                    text_only=match == "text",
                    semantic_only=match == "semantic",
                    filter=flt,
                    sort=sort,
                    collapse=folded,
                )
            except LibraryError as e:
                raise ApiError(503, str(e)) from None
            except IndexStoreError as e:  # the vector store (a Milvus server) is down or refused
                raise ApiError(503, str(e), {"Retry-After": "5"}) from None
            except PixqueryError as e:
                raise ApiError(404 if str(e).startswith("no image with id") else 400, str(e)) from None
            page = list(res)[offset:want]
            rows = lib.catalog.images([r.image_id for r in page if r.image_id is not None and r.video_id is None])
            videos = lib.catalog.video_versions([r.video_id for r in page if r.video_id is not None])
        more = len(res) > want and want < cfg.max_results
        hits = [self._hit(r, rows.get(r.image_id), videos.get(r.video_id)) for r in page]
        if flt.active:
            query["filters"] = flt.to_params()
        if sort != "score":
            query["sort"] = sort
        return {
            "query": query,
            "k": k,
            "offset": offset,
            "results": hits,
            "next_offset": want if more else None,
            "threshold": res.threshold,
            "dropped": res.dropped,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        }

    def _query_parts(self, text, add, subtract, like, unlike, image_id, upload_id, vector, image_weight):
        """(the Query to search, the `query` object the answer describes it with, (the phrases
        added, the phrases subtracted) for the text side). Texts are encoded here, through the
        server's cache and batching, and go to the Library as vectors."""
        cfg = self.config
        if len(add) + len(subtract) + len(like) + len(unlike) > MAX_EXTRA_PARTS:
            raise ApiError(422, f"at most {MAX_EXTRA_PARTS} add, subtract, like and unlike parameters in all")
        for phrase in (*add, *subtract):
            if len(phrase) > cfg.max_query_chars:
                raise ApiError(422, f"a phrase is longer than {cfg.max_query_chars} characters")
        for pid in (*like, *unlike):
            if not 0 <= pid <= MAX_ID:
                raise ApiError(422, f"a photo id is between 0 and {MAX_ID}, not {pid}")
        described: dict = {}
        parsed = query_mod.Query()
        try:
            if text is not None:
                text = text.strip()
                if not text:
                    raise ApiError(400, "the query is empty")
                if len(text) > cfg.max_query_chars:
                    raise ApiError(422, f"the query is longer than {cfg.max_query_chars} characters")
                described["text"] = text
                parsed = query_mod.parse_inline(text)
            for phrase in add:
                parsed = parsed.plus(phrase)
            for phrase in subtract:
                parsed = parsed.minus(phrase)
            for pid in like:
                parsed = parsed.plus_photo(pid)
            for pid in unlike:
                parsed = parsed.plus_photo(pid, -1.0)
            if image_id is not None:
                described["image_id"] = image_id
                parsed = parsed.plus_photo(image_id, image_weight)
            if upload_id is not None:
                described["upload_id"] = upload_id
                v = self.uploads.get(upload_id)
                if v is None:
                    raise ApiError(404, "unknown or expired upload_id: upload the image again")
                parsed = parsed.plus_vector(v, image_weight)
            elif vector is not None:
                described["vector"] = True
                parsed = parsed.plus_vector(vector, image_weight)
        except PixqueryError as e:  # the inline syntax, a weight
            raise ApiError(400, str(e)) from None
        if len(parsed) > 1 or add or subtract or like or unlike:
            described["parts"] = parsed.to_dicts()
            if upload_id is not None:  # the upload's part is the last one: name it by its id, not as a vector
                described["parts"][-1] = {
                    "kind": query_mod.UPLOAD,
                    "value": upload_id,
                    "weight": parsed.parts[-1].weight,
                }
        # text parts -> their vectors: cached, so that paging does not re-encode (the text tower
        # is most of a search's time)
        encoded = query_mod.Query(
            query_mod.Part(query_mod.VECTOR, self.texts.encode(p.value), p.weight) if p.kind == query_mod.TEXT else p
            for p in parsed
        )
        return encoded, described, (parsed.text_terms(), parsed.excluded_text_terms())

    @staticmethod
    def _hit(r, row, video: tuple[int, int] | None = None) -> dict:
        d = {
            "rank": r.rank,
            "score": round(r.score, 6),
            "distance": round(r.distance, 6),
            "path": r.path,
            "name": os.path.basename(r.path),
            "kind": "video" if r.video_id is not None else "photo",
            "image_id": r.image_id,
            "video_id": r.video_id,
            "timestamp": r.timestamp,
            "time_range": list(r.time_range) if getattr(r, "time_range", None) else None,
            "box": list(r.box) if r.box else None,
            "width": r.width,
            "height": r.height,
            "found_by": r.found_by,
            "matched": r.matched,
            "demoted_by": r.demoted_by,
            "taken": r.taken,
            "taken_source": r.taken_source,
            "lat": r.lat,
            "lon": r.lon,
            "camera": r.camera,
            "map": map_url(r.lat, r.lon),
            "duplicates": r.duplicates,
        }
        if r.video_id is not None:
            version = f"{video[0]}-{video[1]}" if video else "0"
            d["thumbnail"] = f"/api/videos/{r.video_id}/frame?t={float(r.timestamp or 0):.3f}&v={version}"
            d["original"] = f"/api/videos/{r.video_id}/original"
            if video:
                d["size"] = video[0]
                d["modified"] = _iso(video[1] / 1e9)
        elif r.image_id is not None:
            version = f"{row.size}-{row.mtime_ns}" if row else "0"
            d["thumbnail"] = f"/api/images/{r.image_id}/thumbnail?v={version}"
            d["original"] = f"/api/images/{r.image_id}/original"
            if row:
                d["size"] = row.size
                d["modified"] = _iso(row.mtime_ns / 1e9)
        return d

    def _parse_threshold(self, value: str | None) -> float | str | None:
        """None, 'auto', or an angular distance 0..1 written as a JSON number (what the OpenAPI schema says)."""
        if value is None:
            return None
        if value == "auto":
            if self.calibrated_threshold() is None:
                raise ApiError(
                    400, "threshold=auto: no calibrated threshold is stored for this model (run pixquery eval)"
                )
            return "auto"
        if not JSON_NUMBER.fullmatch(value):
            raise ApiError(422, f"threshold must be a number between 0 and 1, or 'auto', not {value[:40]!r}")
        th = float(value)
        if not 0.0 <= th <= 1.0:
            raise ApiError(422, "threshold is an angular distance between 0 and 1")
        return th

    def calibrated_threshold(self) -> float | None:
        with self.pool.get() as lib:
            return lib.catalog.get_threshold(self.encoder.name, self.encoder.fingerprint)

    def embed_upload(self, data: bytes) -> np.ndarray:
        """Uploaded bytes -> embedding, through the same decode and crop stage (and bomb guard) as indexing."""
        from pixquery.ingest.pipeline import embed_picture

        with self._upload_slots:
            try:
                return embed_picture(data, self.encoder, name="upload", max_pixels=self.config.max_upload_pixels)
            except BadImage as e:
                if _claims_too_many_pixels(data, self.config.max_upload_pixels):
                    raise ApiError(413, f"the image is too large: {e.reason}") from None
                raise ApiError(400, f"cannot read the uploaded image: {e.reason}") from None

    # -- files ------------------------------------------------------------------------------

    def open_image(self, image_id: int) -> files.OpenedImage:
        with self.pool.get() as lib:
            try:
                return files.open_image(lib.catalog, image_id)
            except files.NotServable as e:
                log.info("refused image %s: %s", image_id, e)
                raise ApiError(404, f"no image with id {image_id}") from None

    def open_video(self, video_id: int) -> files.OpenedImage:
        with self.pool.get() as lib:
            try:
                return files.open_video(lib.catalog, video_id)
            except files.NotServable as e:
                log.info("refused video %s: %s", video_id, e)
                raise ApiError(404, f"no video with id {video_id}") from None

    def image_info(self, image_id: int) -> dict:
        with self.open_image(image_id) as opened:
            taken = _exif_date(opened.file)
            row, st = opened.row, opened.stat
        ctype = mimetypes.guess_type(row.path)[0] or "application/octet-stream"
        base = f"/api/images/{image_id}"
        version = f"{st.st_size}-{st.st_mtime_ns}"
        return {
            "image_id": image_id,
            "path": row.path,
            "name": os.path.basename(row.path),
            "folder": os.path.dirname(row.path),
            "size": st.st_size,
            "width": row.width,
            "height": row.height,
            "modified": _iso(st.st_mtime),
            "taken": taken,
            "indexed": _iso(row.indexed_at),
            "content_type": ctype,
            "thumbnail": f"{base}/thumbnail?v={version}",
            "preview": f"{base}/original" if ctype in BROWSER_TYPES else f"{base}/thumbnail?size=1024&v={version}",
            "original": f"{base}/original",
            "similar": f"/api/search?image_id={image_id}",
        }

    def info(self) -> dict:
        enc = self.encoder
        with self.pool.get() as lib:
            raw = lib.info()
        mine = next((m for m in raw["models"] if m["fingerprint"] == enc.fingerprint), None)
        idx = mine and mine.get("index")
        return {
            "library": raw["library"],
            "model": enc.name,
            "model_fingerprint": enc.fingerprint,
            "dim": enc.dim,
            "images": raw["images"],
            "folders": raw["folders"],
            "index": None
            if not idx
            else {
                "kind": idx["kind"],
                "entries": idx["entries"],
                "params": idx["params"] or {},
                "size_bytes": idx["size_bytes"],
                "built_at": _iso(idx["built_at"]),
                "recall": idx["recall"],
            },
            "calibrated_threshold": mine["threshold"] if mine else None,
            "indexing": self.indexing(),
            "limits": {
                "page_size": self.config.page_size,
                "max_k": self.config.max_k,
                "max_results": self.config.max_results,
                "max_query_chars": self.config.max_query_chars,
                "max_upload_bytes": self.config.max_upload_bytes,
                "max_upload_pixels": self.config.max_upload_pixels,
                "thumbnail_sizes": list(thumbnails.SIZES),
            },
            "version": __version__,
        }

    def indexing(self) -> dict | None:
        lib = self.pool.libraries[0]
        status = lib.index_status()  # reads a small JSON file; no catalog access
        if status:
            status = {k: v for k, v in status.items() if k != "pid"}
        return status

    def status(self) -> dict:
        enc = self.encoder
        with self.pool.get() as lib:
            images = lib.catalog.count_images()
            model = lib.catalog.model_by_fingerprint(enc.fingerprint)
            idx = lib.catalog.active_index(model.id) if model else None
            entries = lib.catalog.count_index_entries(idx.id) if idx else None
        return {"images": images, "index_entries": entries, "indexing": self.indexing()}

    def frame_time(self, video_id: int, t: float) -> float:
        """The frame time to show for `t`: the nearest frame the index stored for this video (what
        search hits point at), so that the frame cache holds at most one JPEG per stored frame and
        size, whatever `t` clients ask for. A video with no stored frame: whole seconds."""
        with self.pool.get() as lib:
            nearest = lib.catalog.nearest_frame_time(video_id, t)
        return float(nearest) if nearest is not None else float(round(t))

    def close(self) -> None:
        self.pool.close()
        if self.decoders is not None:
            self.decoders.close()


def _claims_too_many_pixels(data: bytes, limit: int) -> bool:
    from pixquery.ingest.decode import open_header

    try:
        with open_header(io.BytesIO(data)) as img:  # the header's size; nothing is decoded
            w, h = img.size
    except Exception:
        return False
    return w * h > limit


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _exif_date(f) -> str | None:
    """DateTimeOriginal (or DateTime) from the photo's EXIF, as 'YYYY-MM-DDTHH:MM:SS', or None."""
    from pixquery.ingest.decode import open_header

    try:
        with open_header(f) as img:  # header only: nothing is decoded, so no size limit applies
            exif = img.getexif()
            value = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
    except Exception:
        return None
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        return datetime.strptime(value[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


async def get_server(request: Request) -> Server:
    """The app's Server, put into the request state by the app's lifespan.

    An async dependency: it runs on the event loop, not as one more hop through the thread pool."""
    return request.state.server


ServerDep = Annotated[Server, Depends(get_server)]
