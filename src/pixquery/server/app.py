"""The HTTP server: a FastAPI app over one library, plus the search page (static files).

    config = ServerConfig(library=Path("~/.local/share/pixquery").expanduser(), token="s3cret")
    app = create_app(config)      # loads the model and the index now, not on the first request

Concurrency. FastAPI runs the (synchronous) endpoints in a thread pool. Text queries are
answered from an LRU of recent queries, or encoded by one worker thread that batches the queries
waiting at that moment (`TextEncoder`); the encoder is called outside any catalog lock.
Catalog and index reads go through a `LibraryPool`: `pool_size` Library objects, each with its
own SQLite connection and loaded index, handed to one thread at a time (a pool of one is a plain
lock). Each Library reloads its index when the catalog points at a new index file, so an index
run in another process is picked up by the next search, without a restart.

Errors are JSON, `{"error": "...", "status": N}`: 4xx for anything the client can fix, 503 when
the library has no index yet or the server holding its vectors (Milvus) does not answer (within
the index's `timeout`; the next search after it is back succeeds), and a bare 500 (traceback in
the server log only) for bugs.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import json
import logging
import mimetypes
import os
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import parse_qs, quote, urlencode

import numpy as np
from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.datastructures import Headers, UploadFile

from pixquery import __version__
from pixquery.errors import BadImage, IndexStoreError, LibraryError, PixqueryError
from pixquery.server import files, thumbnails

log = logging.getLogger("pixquery.server")

TOKEN_COOKIE = "pixquery_token"
TOKEN_HEADER = "x-pixquery-token"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
BROWSER_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif", "image/x-ms-bmp"}
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
MAX_ID = 2**63 - 1  # SQLite INTEGER
FILE_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"


@dataclass
class ServerConfig:
    library: Path
    model: Optional[str] = None
    token: Optional[str] = None
    host: str = "127.0.0.1"  # used for the Host-header check (DNS rebinding) on loopback
    port: int = 8765
    pool_size: int = 1  # Library objects (SQLite connections) serving requests; 1 = a lock
    page_size: int = 30  # default k
    max_k: int = 200  # larger k are capped to this
    max_results: int = 1000  # offset + k never go beyond this
    max_query_chars: int = 500
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 80_000_000  # decompression-bomb guard for uploads (indexing: 179 MP)
    upload_concurrency: int = 2  # uploads decoded at once (memory bound)
    upload_cache: int = 128  # recent upload embeddings kept for paging (by id)
    text_cache: int = 1024  # recent text-query embeddings kept by the server
    text_batch: int = 1  # >1: concurrent text queries encoded together (no gain measured on 2 busy cores)
    thumbnail_dir: Optional[Path] = None  # default <library>/thumbnails
    thumbnail_concurrency: int = 2
    warm: bool = True  # load both model towers and the index at start-up
    static_dir: Optional[Path] = None  # serve the page from here instead of the package (development)


# -- pieces -------------------------------------------------------------------------------------


class LibraryPool:
    """`size` Library objects over one library folder, each used by one thread at a time."""

    def __init__(self, path: Path, model: str | None, size: int = 1, timeout: float = 30.0):
        from pixquery.api import Library

        self.timeout = timeout
        self.libraries = [Library.open(path, model=model, create=False) for _ in range(max(1, size))]
        self.encoder = self.libraries[0].encoder
        for lib in self.libraries[1:]:
            # Share one encoder (its sessions and text-query cache); Library has no public setter yet.
            lib._encoder = self.encoder
        self._free: queue.Queue = queue.Queue()
        for lib in self.libraries:
            self._free.put(lib)

    @contextmanager
    def get(self):
        try:
            lib = self._free.get(timeout=self.timeout)
        except queue.Empty:
            raise ServerBusy() from None
        try:
            yield lib
        finally:
            self._free.put(lib)

    def close(self) -> None:
        for lib in self.libraries:
            lib.close()


class ServerBusy(Exception):
    pass


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class TextEncoder:
    """Text queries -> embeddings, with an LRU of recent queries in front of the encoder.

    A cached query (paging, a query asked again) is answered at once. With `batch` > 1 the others
    go to one worker thread that takes every query waiting at that moment (up to `batch`) and
    encodes them in one call; when idle a query waits for nobody (no timer). Batching uses less
    CPU per query in a sequential micro-benchmark, but showed no gain in the loopback load test
    on a busy 2-core machine (bench/results/serve-load.md), so the default is 1: each request
    thread calls the (thread-safe) encoder itself.
    """

    def __init__(self, encoder, cache_size: int = 1024, batch: int = 16):
        self.encoder = encoder
        self.batch = max(1, int(batch))
        self.cache = UploadCache(cache_size)  # an LRU keyed by the query text
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.calls = 0  # encoder calls made (for tests and the load test)

    def encode(self, text: str) -> np.ndarray:
        hit = self.cache.get(text)
        if hit is not None:
            return hit
        if self.batch == 1:
            vector = self.encoder.encode_texts([text])[0]
            self.calls += 1
        else:
            future: Future = Future()
            self._ensure_worker()
            self._queue.put((text, future))
            vector = future.result()
        self.cache.put(text, vector)
        return vector

    def _ensure_worker(self) -> None:
        if self._worker is None:
            with self._start_lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run, name="pixquery-text-encoder", daemon=True)
                    self._worker.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self.encoder.encode_texts([t for t, _ in batch])
                self.calls += 1
                for (_, future), v in zip(batch, vectors):
                    future.set_result(v)
            except BaseException as e:  # the waiting requests get the error; the worker lives on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)


class UploadCache:
    """Embeddings of recent uploads, by id, so that later pages need no second upload."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, vector: np.ndarray) -> None:
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            v = self._items.get(key)
            if v is not None:
                self._items.move_to_end(key)
            return v


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, allow_public: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless explicitly forced."""
    if not is_loopback(host) and not token and not allow_public:
        raise PixqueryError(
            f"refusing to listen on {host} without a token: anyone who can reach this machine could browse "
            "your photos. Give --token (or set PIXQUERY_TOKEN), or pass --allow-public if you really mean it."
        )


def _static_files(static_dir: Path | None) -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, etag) of the page's files, read once at start-up."""
    root = static_dir or resources.files("pixquery.server") / "static"
    out = {}
    for entry in root.iterdir():
        name = entry.name
        ext = os.path.splitext(name)[1]
        if ext in STATIC_TYPES and not name.startswith("."):
            data = entry.read_bytes()
            out[name] = (data, STATIC_TYPES[ext], '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
    return out


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


# -- response models (the OpenAPI schema) -------------------------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, for a person")
    status: int


class Health(BaseModel):
    status: str = "ok"
    version: str


class Hit(BaseModel):
    rank: int
    score: float = Field(description="cosine similarity, higher is closer")
    distance: float = Field(description="angular distance arccos(score)/pi, lower is closer")
    path: str
    name: str
    kind: str = Field("photo", description="photo or video")
    image_id: Optional[int] = None
    video_id: Optional[int] = None
    timestamp: Optional[float] = Field(None, description="video: seconds into the video of the best frame")
    time_range: Optional[list[float]] = Field(None, description="video: first and last second of the matching stretch")
    box: Optional[list[float]] = Field(None, description="the matching region, relative x0, y0, x1, y1 (null: the whole picture)")
    width: Optional[int] = None
    height: Optional[int] = None
    size: Optional[int] = Field(None, description="file size in bytes (as indexed)")
    modified: Optional[str] = Field(None, description="file modification time (as indexed), ISO 8601 UTC")
    thumbnail: Optional[str] = Field(None, description="URL of a 256 px JPEG thumbnail (of the frame, for a video)")
    original: Optional[str] = Field(None, description="URL of the original file")


class SearchPage(BaseModel):
    query: dict = Field(description="what was searched: {text}, {image_id} or {upload_id}")
    k: int = Field(description="page size actually used (requests above max_k are capped)")
    offset: int
    results: list[Hit]
    next_offset: Optional[int] = Field(None, description="offset of the next page, null when there is none")
    threshold: Optional[float] = Field(None, description="angular-distance threshold applied, null for none")
    dropped: int = Field(0, description="hits the threshold removed while filling this page")
    took_ms: float
    upload_id: Optional[str] = Field(None, description="for image uploads: pass as upload_id to GET /api/search for more pages")


class ImageInfo(BaseModel):
    image_id: int
    path: str
    name: str
    folder: str
    size: int = Field(description="bytes, as on disk now")
    width: Optional[int] = None
    height: Optional[int] = None
    modified: str = Field(description="file modification time, ISO 8601 UTC")
    taken: Optional[str] = Field(None, description="EXIF date taken (camera local time), when the photo has one")
    indexed: Optional[str] = None
    content_type: str
    thumbnail: str
    preview: str = Field(description="URL to show in a browser: the original when browsers can show it, else a 1024 px JPEG")
    original: str
    similar: str = Field(description="URL of a 'more like this' search")


class IndexInfo(BaseModel):
    kind: str
    entries: int
    params: dict = {}
    size_bytes: Optional[int] = None
    built_at: Optional[str] = None
    recall: Optional[float] = None


class LibraryInfo(BaseModel):
    library: str
    model: str
    model_fingerprint: str
    dim: int
    images: int
    folders: list[str]
    index: Optional[IndexInfo] = None
    calibrated_threshold: Optional[float] = Field(None, description="angular distance stored by `pixquery eval`, null if none")
    indexing: Optional[dict] = Field(None, description="progress of an index run going on now, null when none")
    limits: dict
    version: str


class Status(BaseModel):
    images: int
    index_entries: Optional[int] = None
    indexing: Optional[dict] = None


ERRORS = {
    400: {"model": ErrorBody, "description": "bad request"},
    401: {"model": ErrorBody, "description": "missing or wrong token"},
    404: {"model": ErrorBody, "description": "no such image (or not servable)"},
    422: {"model": ErrorBody, "description": "invalid parameter"},
}


# -- the app ------------------------------------------------------------------------------------


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
        self.thumbs = thumbnails.Thumbnails(config.thumbnail_dir or lib_path / "thumbnails",
                                            concurrency=config.thumbnail_concurrency)
        self.uploads = UploadCache(config.upload_cache)
        self.texts = TextEncoder(self.encoder, config.text_cache, config.text_batch)
        self._upload_slots = threading.BoundedSemaphore(max(1, config.upload_concurrency))
        self.static = _static_files(config.static_dir)
        self.started_at = time.time()
        if config.warm:
            self.warm_up()

    def warm_up(self) -> None:
        """Load both towers and every pooled Library's index now, not on the first request."""
        t0 = time.perf_counter()
        self.encoder.encode_texts(["a photo"])
        cfg = self.encoder.preprocess_cfg
        self.encoder.encode_images(np.zeros((1, 3, cfg.size, cfg.size), np.float32))
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

    def search(self, *, text: str | None = None, image_id: int | None = None, upload_id: str | None = None,
               vector: np.ndarray | None = None, k: int, offset: int, threshold: str | None) -> dict:
        t0 = time.perf_counter()
        cfg = self.config
        given = [x is not None for x in (text, image_id, upload_id, vector)]
        if sum(given) != 1:
            raise ApiError(400, "give exactly one of: q (a text query), image_id, upload_id")
        k = min(int(k), cfg.max_k)
        if offset >= cfg.max_results:
            raise ApiError(422, f"offset must be below {cfg.max_results} (the most results a search returns)")
        want = min(offset + k, cfg.max_results)
        th = self._parse_threshold(threshold)
        query: dict
        if text is not None:
            text = text.strip()
            if not text:
                raise ApiError(400, "the query is empty")
            if len(text) > cfg.max_query_chars:
                raise ApiError(422, f"the query is longer than {cfg.max_query_chars} characters")
            vector = self.texts.encode(text)  # cached: paging re-asks the same text
            query = {"text": text}
        elif upload_id is not None:
            vector = self.uploads.get(upload_id)
            if vector is None:
                raise ApiError(404, "unknown or expired upload_id: upload the image again")
            query = {"upload_id": upload_id}
        elif image_id is not None:
            query = {"image_id": image_id}
        else:
            query = {"vector": True}
        with self.pool.get() as lib:
            if image_id is not None:
                row = lib.catalog.image(image_id)
                if row is None or row.deleted:
                    raise ApiError(404, f"no image with id {image_id}")
            try:
                if image_id is not None:
                    res = lib.search(image_id=image_id, k=want + 1, threshold=th)
                else:
                    res = lib.search(vector=vector, k=want + 1, threshold=th)
            except LibraryError as e:
                raise ApiError(503, str(e)) from None
            except IndexStoreError as e:  # the vector store (a Milvus server) is down or refused
                raise ApiError(503, str(e), {"Retry-After": "5"}) from None
            except PixqueryError as e:
                raise ApiError(404 if image_id is not None else 400, str(e)) from None
            page = list(res)[offset: want]
            rows = lib.catalog.images([r.image_id for r in page if r.image_id is not None and r.video_id is None])
            videos = lib.catalog.video_versions([r.video_id for r in page if r.video_id is not None])
        more = len(res) > want and want < cfg.max_results
        hits = [self._hit(r, rows.get(r.image_id), videos.get(r.video_id)) for r in page]
        return {
            "query": query, "k": k, "offset": offset, "results": hits,
            "next_offset": want if more else None, "threshold": res.threshold, "dropped": res.dropped,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        }

    @staticmethod
    def _hit(r, row, video: tuple[int, int] | None = None) -> dict:
        d = {
            "rank": r.rank, "score": round(r.score, 6), "distance": round(r.distance, 6), "path": r.path,
            "name": os.path.basename(r.path), "kind": "video" if r.video_id is not None else "photo",
            "image_id": r.image_id, "video_id": r.video_id, "timestamp": r.timestamp,
            "time_range": list(r.time_range) if getattr(r, "time_range", None) else None,
            "box": list(r.box) if r.box else None, "width": r.width, "height": r.height,
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
        if value is None or value.strip() == "" or value.strip().lower() == "none":
            return None
        value = value.strip().lower()
        if value == "auto":
            if self.calibrated_threshold() is None:
                raise ApiError(400, "threshold=auto: no calibrated threshold is stored for this model (run pixquery eval)")
            return "auto"
        try:
            th = float(value)
        except ValueError:
            raise ApiError(422, f"threshold must be a number between 0 and 1, or 'auto', not {value[:40]!r}") from None
        if not 0.0 <= th <= 1.0 or th != th:
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
            "image_id": image_id, "path": row.path, "name": os.path.basename(row.path), "folder": os.path.dirname(row.path),
            "size": st.st_size, "width": row.width, "height": row.height, "modified": _iso(st.st_mtime),
            "taken": taken, "indexed": _iso(row.indexed_at), "content_type": ctype,
            "thumbnail": f"{base}/thumbnail?v={version}",
            "preview": f"{base}/original" if ctype in BROWSER_TYPES else f"{base}/thumbnail?size=1024&v={version}",
            "original": f"{base}/original", "similar": f"/api/search?image_id={image_id}",
        }

    def info(self) -> dict:
        enc = self.encoder
        with self.pool.get() as lib:
            raw = lib.info()
        mine = next((m for m in raw["models"] if m["fingerprint"] == enc.fingerprint), None)
        idx = mine and mine.get("index")
        return {
            "library": raw["library"], "model": enc.name, "model_fingerprint": enc.fingerprint, "dim": enc.dim,
            "images": raw["images"], "folders": raw["folders"],
            "index": None if not idx else {
                "kind": idx["kind"], "entries": idx["entries"], "params": idx["params"] or {},
                "size_bytes": idx["size_bytes"], "built_at": _iso(idx["built_at"]), "recall": idx["recall"]},
            "calibrated_threshold": mine["threshold"] if mine else None,
            "indexing": self.indexing(),
            "limits": {"page_size": self.config.page_size, "max_k": self.config.max_k, "max_results": self.config.max_results,
                       "max_query_chars": self.config.max_query_chars, "max_upload_bytes": self.config.max_upload_bytes,
                       "max_upload_pixels": self.config.max_upload_pixels, "thumbnail_sizes": list(thumbnails.SIZES)},
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

    def close(self) -> None:
        self.pool.close()


def _claims_too_many_pixels(data: bytes, limit: int) -> bool:
    from pixquery.ingest.decode import open_header

    try:
        with open_header(io.BytesIO(data)) as img:  # the header's size; nothing is decoded
            w, h = img.size
    except Exception:
        return False
    return w * h > limit


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _derived_image_headers(etag: str, version: str | None, st) -> dict:
    """Headers of a thumbnail or video frame: cacheable for a year when the URL names the file's
    current version (size-mtime, as search results give it), else revalidated every time."""
    current = version == f"{st.st_size}-{st.st_mtime_ns}"
    return {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable" if current else "private, no-cache"}


def _etag_matches(request: Request, etag: str) -> bool:
    inm = request.headers.get("if-none-match")
    return bool(inm) and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")])


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI app. Loads the library, the model and the index before returning."""
    server = Server(config)

    @asynccontextmanager
    async def lifespan(app):
        yield
        server.close()

    # FastAPIOffline: FastAPI whose /api/docs page loads Swagger UI from this server, not from a CDN
    # (a photo server often runs where the internet is not, and the page is behind the token).
    app = FastAPIOffline(
        title="pixquery", version=__version__,
        description="Search a photo library with words or with a photo. All errors are JSON: {error, status}.",
        docs_url="/api/docs", redoc_url=None, static_url="/api/docs-static", openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.server = server
    app.add_middleware(Guard, token=config.token, loopback_only_hosts=is_loopback(config.host))

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(ServerBusy)
    async def _busy(request, exc):
        return _error(503, "the server is busy: try again", {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = "not found"
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(PixqueryError)
    async def _pixquery_error(request, exc: PixqueryError):
        return _error(503 if isinstance(exc, (LibraryError, IndexStoreError)) else 400, str(exc))

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return _error(500, "internal server error (see the server's log)")

    # -- API --------------------------------------------------------------------------------

    @app.get("/api/health", response_model=Health, tags=["server"], responses=ERRORS)
    def health():
        """Liveness: answers as long as the server runs (the token is required like everywhere)."""
        return {"status": "ok", "version": __version__}

    @app.get("/api/info", response_model=LibraryInfo, tags=["library"], responses=ERRORS)
    def info():
        """The library: model, index, number of images, calibrated threshold, indexing progress, limits."""
        return server.info()

    @app.get("/api/status", response_model=Status, tags=["library"], responses=ERRORS)
    def status():
        """Cheap to poll: image count, index size and the progress of an index run going on now."""
        return server.status()

    max_q = config.max_query_chars

    @app.get("/api/search", response_model=SearchPage, tags=["search"], responses=ERRORS)
    def search(
        q: Optional[str] = Query(None, max_length=max_q, description=f"a text query (at most {max_q} characters)"),
        image_id: Optional[int] = Query(None, ge=0, le=MAX_ID, description="search with an image of the library ('more like this')"),
        upload_id: Optional[str] = Query(None, max_length=64, pattern=r"^[0-9a-f]{1,64}$",
                                         description="a previous image upload (from POST /api/search/image)"),
        k: int = Query(config.page_size, ge=1, description=f"results per page (capped at {config.max_k})"),
        offset: int = Query(0, ge=0, le=config.max_results, description="skip this many results (paging)"),
        threshold: Optional[str] = Query(None, max_length=32, description="angular distance 0..1 above which results are dropped, or 'auto'"),
    ):
        """Search by text (`q`), by an image of the library (`image_id`) or by an earlier upload (`upload_id`)."""
        return server.search(text=q, image_id=image_id, upload_id=upload_id, k=k, offset=offset, threshold=threshold)

    upload_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                   "properties": {"file": {"type": "string", "format": "binary"}}}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }

    @app.post("/api/search/image", response_model=SearchPage, tags=["search"],
              openapi_extra=upload_schema, responses={**ERRORS, 413: {"model": ErrorBody, "description": "upload too large"}})
    async def search_image(
        request: Request,
        k: int = Query(config.page_size, ge=1, description=f"results per page (capped at {config.max_k})"),
        threshold: Optional[str] = Query(None, max_length=32),
    ):
        """Search with a photo: multipart form field `file`, or the image bytes as the body.

        The answer's `upload_id` gets further pages from GET /api/search without uploading again."""
        data = await _read_upload(request, config.max_upload_bytes)
        upload_id = hashlib.sha256(data).hexdigest()[:32]
        vector = server.uploads.get(upload_id)
        if vector is None:
            vector = await run_in_threadpool(server.embed_upload, data)
            server.uploads.put(upload_id, vector)
        page = await run_in_threadpool(lambda: server.search(vector=vector, k=k, offset=0, threshold=threshold))
        page["query"] = {"upload_id": upload_id}
        page["upload_id"] = upload_id
        return page

    @app.get("/api/images/{image_id:int}", response_model=ImageInfo, tags=["images"], responses=ERRORS)
    def image(image_id: int = PathParam(..., ge=0, le=MAX_ID)):
        """Metadata of one image: path, size, pixel size, dates, and the URLs of its files."""
        return server.image_info(image_id)

    @app.get("/api/images/{image_id:int}/thumbnail", tags=["images"], response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG thumbnail"}})
    def thumbnail(
        request: Request,
        image_id: int = PathParam(..., ge=0, le=MAX_ID),
        size: int = Query(thumbnails.DEFAULT_SIZE, description=f"one of {list(thumbnails.SIZES)}"),
        v: Optional[str] = Query(None, max_length=64, description="version from a search result; makes the answer cacheable for a year"),
    ):
        """A JPEG thumbnail (made once, cached on disk; ETag and Cache-Control set)."""
        if size not in thumbnails.SIZES:
            raise ApiError(422, f"size must be one of {list(thumbnails.SIZES)}")
        with server.open_image(image_id) as opened:
            etag = f'"{thumbnails.Thumbnails.key(image_id, opened.stat, size)}"'
            headers = _derived_image_headers(etag, v, opened.stat)
            if _etag_matches(request, etag):
                return Response(status_code=304, headers=headers)
            try:
                data, _ = server.thumbs.get(image_id, opened.file, opened.stat, size)
            except BadImage as e:
                raise ApiError(422, f"cannot make a thumbnail: {e.reason}") from None
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/images/{image_id:int}/original", tags=["images"], response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/*": {}}, "description": "the file as it is on disk"}})
    def original(request: Request, image_id: int = PathParam(..., ge=0, le=MAX_ID)):
        """The original file, as it is on disk (single byte ranges supported)."""
        return _file_response(request, server.open_image(image_id))

    @app.get("/api/videos/{video_id:int}/frame", tags=["videos"], response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG of the frame"}})
    def video_frame(
        request: Request,
        video_id: int = PathParam(..., ge=0, le=MAX_ID),
        t: float = Query(0.0, ge=0, le=1e7, description="seconds into the video (a search result's timestamp)"),
        size: int = Query(thumbnails.DEFAULT_SIZE, description=f"one of {list(thumbnails.SIZES)}"),
        v: Optional[str] = Query(None, max_length=64, description="version from a search result; makes the answer cacheable for a year"),
    ):
        """The frame shown `t` seconds into a video, as a JPEG thumbnail (made once, cached on disk)."""
        from pixquery.ingest.video import VideoError

        if size not in thumbnails.SIZES:
            raise ApiError(422, f"size must be one of {list(thumbnails.SIZES)}")
        with server.open_video(video_id) as opened:
            etag = f'"{thumbnails.Thumbnails.frame_key(video_id, opened.stat, t, size)}"'
            headers = _derived_image_headers(etag, v, opened.stat)
            if _etag_matches(request, etag):
                return Response(status_code=304, headers=headers)
            # Decode through the descriptor already checked (no second lookup of the path).
            source = f"/dev/fd/{opened.file.fileno()}" if os.path.exists("/dev/fd") else opened.real_path
            try:
                data, _ = server.thumbs.get_frame(video_id, source, opened.stat, t, size)
            except VideoError as e:
                raise ApiError(422, f"cannot show that frame: {e}") from None
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/videos/{video_id:int}/original", tags=["videos"], response_class=Response,
             responses={**ERRORS, 200: {"content": {"video/*": {}}, "description": "the video file (byte ranges supported)"}})
    def video_original(request: Request, video_id: int = PathParam(..., ge=0, le=MAX_ID)):
        """The video file, as it is on disk (single byte ranges supported, so that players can seek)."""
        return _file_response(request, server.open_video(video_id))

    # -- the page ---------------------------------------------------------------------------

    def _static(name: str, request: Request, csp: bool = False) -> Response:
        item = server.static.get(name)
        if item is None:
            raise ApiError(404, "not found")
        data, ctype, etag = item
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if csp:
            headers["Content-Security-Policy"] = PAGE_CSP
        if _etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=ctype, headers=headers)

    @app.get("/", include_in_schema=False)
    def page(request: Request):
        return _static("index.html", request, csp=True)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, request: Request):
        # Served from a fixed in-memory table: the name is a key, never a path.
        return _static(name, request)

    return app


def _file_response(request: Request, opened: files.OpenedImage) -> Response:
    """Stream an opened, checked file: ETag / 304, and one byte range (206) for players."""
    st = opened.stat
    etag = f'"{st.st_size}-{st.st_mtime_ns}"'
    ctype = mimetypes.guess_type(opened.real_path)[0] or "application/octet-stream"
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Content-Security-Policy": FILE_CSP,
               "Accept-Ranges": "bytes",
               "Last-Modified": datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")}
    if _etag_matches(request, etag):
        opened.close()
        return Response(status_code=304, headers=headers)
    disposition = "inline" if ctype.startswith(("image/", "video/")) else "attachment"
    headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(os.path.basename(opened.row.path))}"
    start, end, status = 0, st.st_size - 1, 200
    wanted = request.headers.get("range")
    if wanted and request.headers.get("if-range", etag) == etag:
        span = _byte_range(wanted, st.st_size)
        if span is None:
            opened.close()
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{st.st_size}"})
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{st.st_size}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    return StreamingResponse(_chunks(opened, start, end - start + 1), status_code=status, media_type=ctype, headers=headers,
                             background=BackgroundTask(opened.close))


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single 'bytes=a-b' / 'bytes=a-' / 'bytes=-n' range; None when unsatisfiable
    or not understood (several ranges are answered as unsatisfiable too: players ask for one)."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec or size == 0:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            n = int(last)
            if n <= 0:
                return None
            return max(0, size - n), size - 1
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a < 0 or a >= size or b < a:
        return None
    return a, min(b, size - 1)


def _chunks(opened: files.OpenedImage, start: int = 0, length: int | None = None, size: int = 256 * 1024) -> Iterator[bytes]:
    try:
        opened.file.seek(start)
        left = opened.stat.st_size - start if length is None else length
        while left > 0:
            block = opened.file.read(min(size, left))
            if not block:
                break
            left -= len(block)
            yield block
    finally:
        opened.close()


async def _read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes: multipart field `file` (or the first file), or the raw body.
    Refused with 413 as soon as the request is known to be larger than `limit`."""
    declared = request.headers.get("content-length")
    overhead = 64 * 1024  # multipart boundaries and headers
    if declared is not None:
        try:
            if int(declared) > limit + overhead:
                raise ApiError(413, f"upload too large: the limit is {limit / 1048576:g} MiB")
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
    ctype = request.headers.get("content-type", "")
    received = 0

    async def limited():
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + overhead:
                raise ApiError(413, f"upload too large: the limit is {limit / 1048576:g} MiB")
            yield chunk

    if ctype.startswith("multipart/form-data"):
        parser = MultiPartParser(request.headers, limited(), max_files=1, max_fields=5)
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise ApiError(400, f"bad multipart upload: {e.message}") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise ApiError(422, "no file in the upload: send it as the form field 'file'")
        data = await upload.read()
        await upload.close()
    elif ctype.startswith(("image/", "application/octet-stream")) or not ctype:
        parts = []
        async for chunk in limited():
            parts.append(chunk)
        data = b"".join(parts)
    else:
        raise ApiError(415, "send the image as multipart/form-data (field 'file') or as an image/* body")
    if len(data) > limit:
        raise ApiError(413, f"upload too large: the limit is {limit / 1048576:g} MiB")
    if not data:
        raise ApiError(400, "the upload is empty")
    return data


# -- the guard: Host check, token, security headers ---------------------------------------------

_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pixquery: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>pixquery</h1><p>{message}</p>
<form method="get" action="/"><label>Token <input type="password" name="token" autofocus autocomplete="current-password"></label>
<button type="submit">Open</button></form>
<p>The URL printed by <code>pixquery serve</code> carries the token (<code>/?token=...</code>).</p></main></body></html>"""


class Guard:
    """Pure ASGI middleware in front of everything (the page, the API, the OpenAPI docs).

    - On loopback, requests must name a loopback host (Host header): a web page elsewhere cannot
      reach the server through DNS rebinding.
    - With a token set, every request must carry it: `Authorization: Bearer T`, the
      `X-Pixquery-Token: T` header, or the `pixquery_token` cookie. Opening `/?token=T` once sets
      that cookie (HttpOnly, SameSite=Strict) and redirects to `/` so the token leaves the URL.
      Missing or wrong: 401 (JSON for the API, a small form for the page).
    - Security headers on every answer: nosniff, no referrer, no framing; and `Server-Timing: app;dur=MS`
      (the time the app took up to the answer's head).
    """

    def __init__(self, app, token: str | None, loopback_only_hosts: bool):
        self.app = app
        self.token = token.encode() if token else None
        self.loopback_only_hosts = loopback_only_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.loopback_only_hosts and not _loopback_host_header(headers.get("host", "")):
            return await _send_json(send, 400, "bad Host header: this server answers to localhost / 127.0.0.1 only")
        if self.token is not None:
            path = scope["path"]
            qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if path == "/" and "token" in qs:
                if self._ok(qs["token"][0]):
                    cookie = f"{TOKEN_COOKIE}={quote(qs['token'][0], safe='')}; Path=/; HttpOnly; SameSite=Strict"
                    rest = urlencode([(k, v) for k, vs in qs.items() if k != "token" for v in vs])  # e.g. q=dog
                    where = ("/?" + rest if rest else "/").encode("latin-1", "replace")
                    return await _send(send, 303, b"", "text/plain", extra=[(b"location", where), (b"set-cookie", cookie.encode())])
                return await self._refuse(send, path, "That token is wrong.")
            supplied = _supplied_token(headers)
            if supplied is None:
                return await self._refuse(send, path, "This pixquery server needs a token.")
            if not self._ok(supplied):
                return await self._refuse(send, path, "That token is wrong.")

        t0 = time.perf_counter()

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                hs = list(message.get("headers", []))
                names = {k.lower() for k, _ in hs}
                for k, v in _SECURITY_HEADERS:
                    if k not in names:
                        hs.append((k, v))
                # The time inside the server up to the answer's head (routing, the endpoint, JSON):
                # shown by browsers' developer tools, read by bench/typing.py.
                hs.append((b"server-timing", f"app;dur={(time.perf_counter() - t0) * 1000:.2f}".encode()))
                message = {**message, "headers": hs}
            await send(message)

        return await self.app(scope, receive, send_with_headers)

    def _ok(self, supplied: str) -> bool:
        return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), self.token)

    async def _refuse(self, send, path: str, message: str) -> None:
        if path == "/":
            body = _LOGIN_PAGE.format(message=html.escape(message)).encode()
            return await _send(send, 401, body, "text/html; charset=utf-8",
                               extra=[(b"content-security-policy", b"default-src 'none'; form-action 'self'")])
        return await _send_json(send, 401, message.lower().rstrip(".") + " (send it as 'Authorization: Bearer TOKEN')",
                                extra=[(b"www-authenticate", b'Bearer realm="pixquery"')])


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _loopback_host_header(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in LOOPBACK_NAMES or (name.startswith("127.") and is_loopback(name))


def _supplied_token(headers: Headers) -> str | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if headers.get(TOKEN_HEADER):
        return headers[TOKEN_HEADER]
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            from urllib.parse import unquote

            return unquote(value)
    return None


async def _send(send, status: int, body: bytes, ctype: str, extra: list | None = None) -> None:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *_SECURITY_HEADERS, *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await _send(send, status, body, "application/json", extra)
