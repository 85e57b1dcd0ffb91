"""The Python API: `Library.open(path)`, `.index(folders)`, `.search("a red sports car")`.

A library is a folder holding `catalog.sqlite` (the catalog) and `indexes/` (derived ANN index
files). The CLI, the HTTP server and the evaluation all go through this class.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixquery import query as query_mod
from pixquery.catalog import Catalog, IndexRow, ModelRow
from pixquery.errors import BadImage, LibraryError, PixqueryError
from pixquery.filters import Filter, check_sort
from pixquery.ingest import store_only
from pixquery.query import Query
from pixquery.search import Results, SearchResult, run_query, run_store_query

if TYPE_CHECKING:
    from pixquery.duplicates import DuplicateReport
    from pixquery.encoders.base import Encoder
    from pixquery.ingest.crops import RegionConfig
    from pixquery.ingest.sync import SyncReport

# The build stage (pixquery.ingest: decoders, PIL, multiprocessing) is imported by the methods
# that build, not here: `pixquery search` starts without it (docs/performance.md, cold query).

CATALOG_FILE = "catalog.sqlite"
PRECISIONS = ("fp32", "int8")
STATUS_FILE = "indexing.json"  # present while an index run is going on (read by the web page)

log = logging.getLogger(__name__)


def default_library_path() -> Path:
    if os.environ.get("PIXQUERY_LIBRARY"):
        return Path(os.environ["PIXQUERY_LIBRARY"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pixquery"


class IndexProgress:
    """Callbacks of an index run; the CLI's subclass draws progress bars. All optional."""

    def scanned(self, found: int, to_embed: int, deleted: int) -> None: ...

    def started_embedding(self, total: int) -> None: ...

    def advance(self, done: int, failed: int) -> None: ...

    def failure(self, path: str, reason: str) -> None: ...

    def stage(self, text: str) -> None: ...

    def loading(self, done: int, total: int) -> None:
        """Vectors loaded so far into an index that is filled in batches (a Milvus collection)."""

    def reading_metadata(self, done: int, total: int) -> None:
        """Files whose date, place and camera were read so far (a library indexed before they were)."""

    def reading_text(self, done: int, total: int) -> None:
        """Photos read by the OCR stage so far (`index(ocr=True)`)."""

    def missing_plugin(self, fmt: str, count: int, reason: str) -> None:
        """`count` files of format `fmt` cannot be indexed here: `reason` names the install command
        (once per format and run; the files are in the failures too)."""


@dataclass
class IndexReport:
    found: int = 0
    indexed: int = 0  # embedded in this run (new or changed files)
    skipped: int = 0  # unchanged files, already embedded for this model
    removed: int = 0  # files gone from disk, dropped from the library
    videos: int = 0  # videos (re)indexed in this run (also counted in indexed)
    frames: int = 0  # video frames embedded in this run
    regions: int = 0  # region embeddings (tiles, detector boxes) of photos and frames made in this run
    text_photos: int = 0  # photos whose text was read (OCR) in this run
    text_lines: int = 0  # lines of text found in them
    ocr_seconds: float = 0.0  # reading text: the decode workers' time (summed) and the OCR pass's
    text_videos: int = 0  # videos whose frames' text was read (OCR) in this run
    text_video_frames: int = 0  # sampled frames read in them
    text_video_lines: int = 0  # text rows stored for them: one per line and run of frames it stays on
    ocr_video_seconds: float = 0.0  # reading their text (decode processes' time summed, and the pass's)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # The failures that are new: not the same file failing for the same reason in an earlier run.
    new_failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    index: SyncReport | None = None
    # format -> (what is missing + the install command, files): files whose decoder plugin is missing
    missing_plugins: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.embed_seconds if self.embed_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        new = set(self.new_failures)
        return {
            "found": self.found,
            "indexed": self.indexed,
            "skipped": self.skipped,
            "removed": self.removed,
            "videos": self.videos,
            "frames": self.frames,
            "regions": self.regions,
            "text_photos": self.text_photos,
            "text_lines": self.text_lines,
            "ocr_seconds": round(self.ocr_seconds, 3),
            "text_videos": self.text_videos,
            "text_video_frames": self.text_video_frames,
            "text_video_lines": self.text_video_lines,
            "ocr_video_seconds": round(self.ocr_video_seconds, 3),
            "failed": [{"path": p, "reason": r, "new": (p, r) in new} for p, r in self.failed],
            "new_failures": len(self.new_failures),
            "seconds": round(self.seconds, 3),
            "missing_plugins": [
                {"format": f, "files": len(paths), "fix": reason} for f, (reason, paths) in self.missing_plugins.items()
            ],
            "images_per_second": round(self.images_per_second, 2),
            "index": None
            if self.index is None
            else {
                "kind": self.index.kind,
                "added": self.index.added,
                "removed": self.index.removed,
                "total": self.index.total,
                "rebuilt": self.index.rebuilt,
                "size_bytes": self.index.size_bytes,
            },
        }


class Library:
    def __init__(
        self,
        path: Path,
        model: str | None = None,
        precision: str | None = None,
        *,
        create: bool = True,
        encoder: Encoder | None = None,
    ):
        self.path = Path(path)
        if not create and not (self.path / CATALOG_FILE).is_file():
            raise LibraryError(
                f"no library at {self.path}: make one with `pixquery index FOLDER --library {self.path}`"
            )
        self.catalog = Catalog(self.path / CATALOG_FILE)
        self._model_name = model
        self._default_model: str | None = None
        if precision is not None and precision not in PRECISIONS:
            raise PixqueryError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self._precision = precision
        self._encoder: Encoder | None = encoder  # given: used instead of loading `model` (see open)
        self._injected_encoder = encoder is not None
        # (index_id, path, index, index row), or ("store", None, collection, None)
        self._loaded: tuple[Any, ...] | None = None

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        model: str | None = None,
        precision: str | None = None,
        *,
        create: bool = True,
        encoder: Encoder | None = None,
    ) -> Library:
        """Open (or create) a library. `model`: a name from `pixquery models`, or a local model folder.
        `precision`: "fp32" or "int8"; None uses the library's (what its last `index` with a
        precision chose; fp32 for a new library). Model and precision given here are remembered
        by `index`, so every later command (search, serve, a plain rescan) uses the same.
        create=False: raise LibraryError("no library at ...") instead of creating a missing one.
        encoder: an object with the Encoder protocol (pixquery.encoders.base) to use instead of
        loading a model, e.g. a stand-in that maps words to known vectors in a test."""
        return cls(
            Path(path).expanduser() if path else default_library_path(),
            model,
            precision,
            create=create,
            encoder=encoder,
        )

    def close(self) -> None:
        if self._loaded is not None and self._loaded[0] == "store":
            store_only.close_store(self, self._loaded[2])
            self._loaded = None
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- model ----------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        name = self._model_name or self.catalog.get_setting("model") or self.default_model()
        # A local folder is remembered by its absolute path, so the library works from any cwd.
        return os.path.abspath(name) if os.path.isdir(os.path.expanduser(name)) else name

    def default_model(self) -> str:
        """The model of a library that names none: DEFAULT_MODEL for a new one. A library already
        holding embeddings without a stored model setting was indexed with the default of its time,
        which was LEGACY_DEFAULT_MODEL (until the default followed bench/models.py's rule, `index`
        stored a model only when --model was given): it keeps that model."""
        from pixquery.encoders.registry import DEFAULT_MODEL, LEGACY_DEFAULT_MODEL

        if self._default_model is None:  # decided once, as opened: this instance's own embeddings do not count
            self._default_model = LEGACY_DEFAULT_MODEL if any(m.dim for m in self.catalog.models()) else DEFAULT_MODEL
        return self._default_model

    @property
    def precision(self) -> str:
        return self._precision or self.catalog.get_setting("precision") or "fp32"

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            from pixquery.encoders.registry import load_encoder

            self._encoder = load_encoder(self.model_name, precision=self.precision)
        return self._encoder

    def _model_row(self, create: bool) -> ModelRow | None:
        enc = self.encoder
        row = self.catalog.model_by_fingerprint(enc.fingerprint)
        if row is None and create:
            with self.catalog.transaction():
                row = self.catalog.ensure_model(enc.name, enc.fingerprint, enc.dim)
        elif row is not None and row.dim == 0 and create:  # created by set_threshold before any index
            with self.catalog.transaction():
                self.catalog.set_model_shape(row.id, enc.name, enc.dim)
            row = self.catalog.model(row.id)
        return row

    # -- build ----------------------------------------------------------------------------

    def index(
        self,
        paths: Sequence[str | Path] | None = None,
        *,
        index: str | None = None,
        index_params: dict[str, Any] | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        draft: bool = True,
        progress: IndexProgress | None = None,
        regions: bool | RegionConfig | None = None,
        detector: str | None = None,
        videos: bool = True,
        every_seconds: float | None = None,
        engine: str = "local",
        address: str | None = None,
        ocr: bool | None = None,
        exclude: Sequence[str] | None = None,
    ) -> IndexReport:
        """Add folders (or files) to the library and bring it up to date with the disk.

        Only new or changed files are embedded; files gone from disk are dropped. With no paths,
        every folder indexed before is rescanned. Bad files are reported, never fatal.

        regions: True embeds tiles of photos and video frames (small things become findable, results
        carry a box), False stops, None keeps the library's setting, a crops.RegionConfig sets them. detector: an ONNX object detector
        whose boxes are embedded too (turns regions on). videos: index video files as well (frames
        every `every_seconds`, default: the library's setting, else 2, plus one at each cut).
        engine: where decoding and encoding run: "local" (this machine's cores) or "ray" (a Ray
        cluster at `address`, "auto" or "ray://host:port"; None starts a local Ray for the run);
        the results are written here, in this library, either way. ocr: True reads the text in
        photos (ingest/ocr.py; needs pixquery[ocr]) so that searches match it too, False stops and
        forgets it, None keeps the library's setting.
        exclude: gitignore-style globs to leave out of the folders indexed in this run (relative to
        each), remembered for them ([] forgets theirs; None keeps what each remembers). Files they
        exclude that were indexed before leave the library. See ingest/exclude.py, which also says
        what is skipped by default, and .pixqueryignore files.
        """
        import dataclasses

        from pixquery.ingest import exclude as excluding
        from pixquery.ingest import metadata, pipeline, sources
        from pixquery.ingest import ocr as ocr_mod
        from pixquery.ingest import regions as region_mod
        from pixquery.ingest import scan as scanning
        from pixquery.ingest import video as video_mod
        from pixquery.ingest.items import VIDEO, DecodeSettings
        from pixquery.ingest.sync import sync_index
        from pixquery.ingest.write import CatalogWriter

        pipeline.check_engine(engine)  # before any work
        store_only.refuse(self, "index")
        progress = _StatusFile(self.path / STATUS_FILE, progress or IndexProgress())
        t0 = time.perf_counter()
        report = IndexReport()
        with self._write_lock(), progress:
            roots = [scanning.normalize_root(p) for p in paths] if paths else self.catalog.folders()
            if not roots:
                raise LibraryError("nothing to index: give a folder, e.g. pixquery index ~/Pictures")
            for root in roots:
                if not os.path.exists(root):
                    raise LibraryError(f"{root}: no such file or folder")
            if exclude is not None:
                exclude = excluding.check_globs(exclude)
                if exclude and not any(os.path.isdir(r) for r in roots):
                    raise PixqueryError("--exclude is for folders: none of the paths given is a folder")
            model = self._model_row(create=True)
            assert model is not None  # create=True
            kind, params, changed_config = self._index_config(index, index_params)
            region_cfg = region_mod.choose_config(self.catalog, regions, detector)
            ocr_cfg = ocr_mod.choose_config(self.catalog, ocr)
            if ocr_cfg is not None:
                ocr_cfg = ocr_cfg.resolved()  # fails now, before any work, without the engine
            sampling = video_mod.choose_sampling(self.catalog, every_seconds=every_seconds)
            with self.catalog.transaction():
                for root in roots:
                    if os.path.isdir(root):
                        self.catalog.add_folder(root)
                        if exclude is not None:
                            self.catalog.set_folder_excludes(root, exclude)
                # Stored for the default too (not only for --model): a later change of the default
                # never changes the model of an existing library. (An injected stand-in encoder
                # without a model name is no model to remember.)
                if self._model_name or not self._injected_encoder:
                    self.catalog.set_setting("model", self.model_name)
                if self._precision:
                    self.catalog.set_setting("precision", self._precision)

            progress.stage("scanning")
            plan = sources.plan(self.catalog, roots, model.id, regions=region_cfg, sampling=sampling, videos=videos)
            report.found, report.skipped, report.removed = plan.found, plan.skipped, plan.removed
            report.failed.extend(plan.failed)
            report.missing_plugins = plan.missing_plugins
            unsupported = {p for _, paths in plan.missing_plugins.values() for p in paths}
            for path, reason in plan.failed:
                if path not in unsupported:
                    progress.failure(path, reason)
            for fmt, (reason, paths) in plan.missing_plugins.items():
                progress.missing_plugin(fmt, len(paths), reason)
            progress.scanned(plan.found, plan.to_embed, plan.removed)

            items = plan.items
            if ocr_cfg is not None:
                # The decode workers read the text of the photos they decode anyway (new and
                # changed files, and unread ones): detection on the same pixels, beside the encoder.
                # Photos not embedded in this run are read by the OCR pass below.
                unread = {path for _, path, _, _ in self.catalog.photos_to_read(ocr_cfg.to_json())}
                # Videos likewise: those whose frames change (new, changed, other sampling) or
                # whose text was not read with these settings (ingest/video_text.py).
                unread |= {path for _, path, _, _ in self.catalog.videos_to_read(ocr_cfg.to_json())}
                items = [
                    dataclasses.replace(it, read_text=True)
                    if (it.whole if it.kind != VIDEO else not it.reuse) or it.path in unread
                    else it
                    for it in items
                ]
            writer = CatalogWriter(self.catalog, model.id, ocr_key=ocr_cfg.to_json() if ocr_cfg else None)
            settings = DecodeSettings(
                self.encoder.preprocess_cfg,
                draft=draft,
                regions=region_cfg.resolved() if region_cfg else None,
                sampling=sampling,
                ocr=ocr_cfg,
            )
            progress.started_embedding(len(plan.items))
            ray_only = {"model": self.model_name} if engine == "ray" else {}  # each node loads it by name
            stats = pipeline.run(
                items,
                self.encoder,
                settings,
                writer,
                engine=engine,
                address=address,
                batch_size=batch_size,
                workers=workers,
                on_progress=progress.advance,
                on_failure=progress.failure,
                **ray_only,
            )
            sources.saved_after_run(self.catalog, region_cfg, sampling, videos)
            counts = writer.counts
            report.indexed = counts.photos + counts.videos
            report.videos, report.frames, report.regions = counts.videos, counts.frames, counts.regions
            report.embed_seconds = stats.seconds
            report.failed.extend(stats.failed)
            report.failed.extend(stats.problems)
            # Files embedded before their metadata was read (an older library): headers only.
            missing = self.catalog.count_without_meta()
            if missing:
                progress.stage(f"reading dates, places and cameras of {missing} files indexed before")
                filled_photos, filled_videos = metadata.backfill(self.catalog, on_progress=progress.reading_metadata)
                if kind == "milvus":  # its rows keep the date beside each vector: re-add them with it
                    with self.catalog.transaction():
                        self.catalog.mark_stale_for_meta(filled_photos, filled_videos)

            ocr_mod.apply_config(self.catalog, ocr_cfg)
            if ocr_cfg is not None:
                progress.stage("reading text in photos")
                text = ocr_mod.read_photos(
                    self.catalog, ocr_cfg, on_progress=progress.reading_text, on_failure=progress.failure
                )
                report.text_photos = counts.text_photos + text.photos
                report.text_lines = counts.text_lines + text.lines
                report.ocr_seconds = counts.text_seconds + text.seconds  # the workers' time summed
                report.failed.extend(text.failed)
                if videos:
                    from pixquery.ingest import video_text

                    if self.catalog.videos_to_read(ocr_cfg.to_json()):
                        progress.stage("reading text in videos indexed before")
                    vtext = video_text.read_videos(
                        self.catalog, ocr_cfg, sampling, on_progress=progress.reading_text, on_failure=progress.failure
                    )
                    report.text_videos = counts.text_videos + vtext.videos
                    report.text_video_frames = counts.text_video_frames + vtext.frames
                    report.text_video_lines = counts.text_video_lines + vtext.lines
                    report.ocr_video_seconds = counts.text_video_seconds + vtext.seconds
                    report.failed.extend(vtext.failed)

            report.index = sync_index(
                self.catalog,
                self.path,
                model,
                kind,
                params,
                rebuild=changed_config,
                on_stage=progress.stage,
                on_load=progress.loading,
                calibration_queries=self._calibration_queries,
            )
            with self.catalog.transaction():
                self.catalog.purge_deleted()
                self.catalog.purge_deleted_videos()  # and retired regions/frames
                self.catalog.set_setting("index", json.dumps({"kind": kind, "params": params}, sort_keys=True))
                report.new_failures = self.catalog.record_failures(roots, report.failed)
        report.seconds = time.perf_counter() - t0
        return report

    def reindex(
        self,
        index: str | None = None,
        index_params: dict[str, Any] | None = None,
        progress: IndexProgress | None = None,
    ) -> SyncReport:
        """Rebuild the index (another kind or parameters) from stored embeddings: nothing is re-embedded."""
        from pixquery.ingest.sync import sync_index

        progress = progress or IndexProgress()
        store_only.refuse(self, "reindex")
        with self._write_lock():
            model = self._model_row(create=False)
            if model is None:
                raise LibraryError(f"nothing embedded with {self.model_name} yet: run pixquery index first")
            kind, params, _ = self._index_config(index, index_params)
            report = sync_index(
                self.catalog,
                self.path,
                model,
                kind,
                params,
                rebuild=True,
                on_stage=progress.stage,
                on_load=progress.loading,
                calibration_queries=self._calibration_queries,
            )
            with self.catalog.transaction():
                self.catalog.set_setting("index", json.dumps({"kind": kind, "params": params}, sort_keys=True))
            return report

    def _calibration_queries(self) -> np.ndarray:
        """What `auto` measures recall on: this model's embeddings of everyday text queries (called
        only when `auto` measures, i.e. beyond a few thousand vectors)."""
        from pixquery.query_sample import QUERIES

        queries: np.ndarray = self.encoder.encode_texts(QUERIES)
        return queries

    def _index_config(self, kind: str | None, params: dict[str, Any] | None) -> tuple[str, dict[str, Any], bool]:
        """The index kind and params to use, and whether they differ from the library's current ones."""
        from pixquery import indexes

        saved = json.loads(self.catalog.get_setting("index") or "null") or {"kind": indexes.DEFAULT_KIND, "params": {}}
        if kind is None and not params:
            return saved["kind"], saved["params"], False
        kind = kind or saved["kind"]
        params = dict(params or {})
        indexes.make_config(kind, **params)  # validate now, before any work
        return kind, params, (kind, params) != (saved["kind"], saved["params"])

    def index_status(self) -> dict[str, Any] | None:
        """Progress of an index run going on now (in any process), or None."""
        try:
            status: dict[str, Any] = json.loads((self.path / STATUS_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        try:
            os.kill(int(status.get("pid", -1)), 0)
        except (OSError, ValueError):
            return None  # the run that wrote it is gone (killed): stale
        return status

    def _write_lock(self) -> _FileLock:
        return _FileLock(self.path / "lock")

    # -- query ----------------------------------------------------------------------------

    def _index(self) -> tuple[Any, IndexRow | None]:
        """The active index of the current model, loaded once and reloaded when it changes on disk;
        for a store-only library its collection, and None for the catalog row (see _query)."""
        store = store_only.settings(self.catalog)
        if store is not None:
            if self.encoder.fingerprint != store["fingerprint"]:
                raise LibraryError(
                    f"{store_only.describe(self)} of vectors of {store['model']}: search it with "
                    f"that model (-m {store['model']}), not {self.model_name}"
                )
            if self._loaded is None:
                self._loaded = ("store", None, store_only.open_store(self), None)
            return self._loaded[2], None
        model = self._model_row(create=False)
        row = self.catalog.active_index(model.id) if model else None
        if row is None or not row.path:
            raise LibraryError(
                f"the library at {self.path} has no index for model {self.model_name}: run pixquery index FOLDER"
            )
        if self._loaded is None or self._loaded[:2] != (row.id, row.path):
            from pixquery import indexes

            if not (self.path / row.path).exists():
                raise LibraryError(f"index file {self.path / row.path} is missing: run pixquery index to rebuild it")
            idx = indexes.load_index(row.kind, self.path / row.path, mmap=True)
            self._loaded = (row.id, row.path, idx, row)
        return self._loaded[2], self._loaded[3]

    def search(
        self,
        query: str | Query | None = None,
        *,
        image: str | Path | None = None,
        image_id: int | None = None,
        vector: np.ndarray | None = None,
        add: Sequence[str] = (),
        subtract: Sequence[str] = (),
        image_weight: float = 1.0,
        k: int = 10,
        threshold: float | str | None = None,
        text_only: bool = False,
        semantic_only: bool = False,
        text_terms: Sequence[str] | None = None,
        excluded_text_terms: Sequence[str] | None = None,
        after: str | date | None = None,
        before: str | date | None = None,
        folders: Sequence[str | Path] | str | Path = (),
        media: str | None = None,
        camera: str | None = None,
        near: str | tuple[float, float] | None = None,
        within: float | str | None = None,
        filter: Filter | None = None,
        sort: str = "score",
        strategy: str = "auto",
        collapse: bool | float = False,
    ) -> Results:
        """Search by a sentence, an image file, an image already in the library, a raw vector, or
        a weighted combination of them (pixquery.query).

        query: a sentence in the inline syntax ("beach +sunset -people": plus and minus parts,
        docs/search.md), or a pixquery.query.Query of weighted parts. add / subtract: more phrases,
        taken literally, added or subtracted. image, image_id, vector: parts weighted `image_weight`
        (negative: photos like it go down). The parts are combined as rclip does: the weighted sum
        of their L2-normalised embeddings, normalised. Photos added by id ("more like this") are
        left out of the results.

        threshold: an angular distance (0..1) above which results are dropped, "auto" for the
        threshold `pixquery eval` stored for this model, or for a sigmoid-trained model (SigLIP)
        "p=0.5": the lowest match probability kept (the same meaning for every query and model).
        collapse: fold near-duplicate photos into the best-ranked one of them (its `duplicates`
        lists their paths), so k results are k different pictures (text_only results and fused
        ones too, by the photos' stored embeddings of this library's model). True uses the near-duplicate
        threshold of `duplicates` (pixquery.duplicates.DEFAULT_THRESHOLD), a number sets it (an
        angular distance).

        Filters (pixquery.filters; still k results when k pass): after / before a date ("2019",
        "2019-06", "2019-06-15", a date: after keeps that period on, before keeps what is
        earlier than it; the date taken, as the clock showed where it was taken), folders (files
        in any of them or below), media "photo" or "video", camera (part of make and model, any
        case), near (lat, lon) within km (default 10). Or a ready `filter=Filter(...)`.
        sort: "score" (best first) or "date" (the results, oldest first). strategy: how a filtered
        search runs ("auto": chosen from the filter's selectivity; "prefilter", "postfilter").

        In a library with OCR on (`index(ocr=True)`), a sentence is also matched against the text
        read in the photos and the two rankings are fused (fusion.py); results then say which side
        found them (`found_by`) and the lines of text that matched (`matched`). A subtracted
        phrase leaves out of the text hits the photos whose text holds all its words (and the video
        moments whose text on screen does), and puts them below every other result
        (text_search.holding_phrases, held_in_videos; docs/search.md). text_only skips the
        model (score: the share of the query's words found), semantic_only the text (both ways).
        text_terms / excluded_text_terms: the phrases the text side looks for / leaves out, when
        the query's texts come already encoded (the server caches text vectors); default: the
        query's added / subtracted phrases.
        """
        parts = self.query_of(
            query, image=image, image_id=image_id, vector=vector, add=add, subtract=subtract, image_weight=image_weight
        )
        if text_only and semantic_only:
            raise PixqueryError("--text-only and --semantic-only exclude each other")
        sort = check_sort(sort)
        flt = (
            filter
            if filter is not None
            else Filter.parse(
                after=after, before=before, folders=folders, media=media, camera=camera, near=near, within=within
            )
        )
        if flt.active or sort != "score":
            store_only.refuse(self, "filters and sort")
        # The text side (OCR) looks for the words of the phrases added, and leaves out the photos
        # whose text holds a phrase subtracted; image parts are the semantic side's alone.
        words = " ".join(parts.text_terms() if text_terms is None else text_terms)
        excluded = list(parts.excluded_text_terms() if excluded_text_terms is None else excluded_text_terms)
        text_on = not semantic_only and self._has_text()
        text_side = bool(words.strip()) and text_on
        excluding = excluded if text_on else []
        folding = collapse is not False and collapse is not None
        if text_only:
            if not words.strip():
                raise PixqueryError(
                    "--text-only needs a phrase to look for in the photos' text: a subtracted one "
                    "(-draft) only leaves out photos that an added one finds"
                    if excluded
                    else "--text-only needs a text query"
                )
            if not text_on:
                raise PixqueryError(
                    f"the library at {self.path} has no text read from its photos: run pixquery index --ocr first"
                )
            return self._text_only_query(parts, words, excluding, k, flt, sort, collapse if folding else None)
        if any(p.kind == query_mod.IMAGE_ID for p in parts):
            store_only.refuse(self, "image_id")
        index, row = self._index()
        threshold = self._threshold(threshold)
        q = query_mod.combine(self.encoder, parts, lambda part: self._part_vector(part, row))
        if row is None:  # store-only: the paths come from the collection, not from catalog rows
            if folding:
                raise PixqueryError(
                    "collapsing near-duplicates needs the photos' embeddings in the catalog, "
                    "which a store-only library does not keep"
                )
            results = run_store_query(index, q, k, threshold)
        elif folding:
            results = self._collapsed_query(
                parts,
                words if text_side else "",
                excluding,
                index,
                row,
                q,
                k,
                threshold,
                flt,
                sort,
                strategy,
                collapse,
            )
        else:
            results = self._run_query(
                parts, words if text_side else "", excluding, index, row, q, k, threshold, flt, sort, strategy
            )
        probability = getattr(self.encoder, "match_probability", None)
        if probability is not None and results and probability(0.0) is not None:
            for r, p in zip(results, probability([r.score for r in results])):
                r.probability = float(p)
        return results

    def _text_only_query(
        self,
        parts: Query,
        words: str,
        excluding: Sequence[str],
        k: int,
        flt: Filter,
        sort: str,
        collapse: bool | float | None,
    ) -> Results:
        """The text side alone (`--text-only`): photos and videos whose text matches `words`, less
        those whose text holds a phrase of `excluding` (a video: at the hit's moment);
        near-duplicates folded when `collapse` is not None (by the stored embeddings of this
        library's model: its identity is read; for an ONNX model that is a fingerprint of its
        files, no session is made)."""
        from pixquery.search import by_date, text_only_results, with_meta
        from pixquery.text_search import held_in_videos, holding_phrases, search_text, without_held

        liked = parts.liked_photos()

        def found(limit: int) -> Results:
            hits = [h for h in search_text(self.catalog, words, limit=max(limit, 50)) if h.image_id not in liked]
            if excluding:
                held = holding_phrases(self.catalog, excluding, [h.image_id for h in hits if h.image_id is not None])
                in_videos = held_in_videos(
                    self.catalog, excluding, [h.video_id for h in hits if h.video_id is not None]
                )
                hits = [h for h in hits if h.video_id is not None or h.image_id not in held]
                hits = [moved for moved in (without_held(h, in_videos) for h in hits) if moved is not None]
            return text_only_results(self.catalog, self._passing(hits, flt), limit)

        if collapse is None:
            results = found(k)
        else:
            model = self._model_row(create=False)
            results = self._folded(found, k, model.id if model else None, collapse, size=None)
        with_meta(self.catalog, results)
        if sort == "date":
            by_date(results)
        return results

    def _run_query(
        self,
        parts: Query,
        words: str,
        excluding: Sequence[str],
        index: Any,
        row: Any,
        q: np.ndarray,
        k: int,
        threshold: float | None,
        flt: Filter,
        sort: str,
        strategy: str,
    ) -> Results:
        """The semantic search of `q` (only what passes `flt`), fused with the text side's hits for
        `words` when there are any (a library with OCR, a query with words: text_search.py,
        fusion.py), photos whose text holds a phrase of `excluding` (and video moments whose text on
        screen does) out of the text hits and after every other result; sort="date" orders the
        results by date taken."""
        from pixquery.ingest import video as video_mod

        liked = parts.liked_photos()
        merge_gap = video_mod.merge_gap_for(self.catalog)
        if not words and not excluding:
            return run_query(
                self.catalog,
                index,
                row,
                q,
                k,
                threshold,
                exclude_image=liked,
                merge_gap=merge_gap,
                flt=flt,
                sort=sort,
                strategy=strategy,
            )
        from pixquery.search import by_date, fuse_with_text, with_meta
        from pixquery.text_search import HeldInVideos, held_in_videos, holding_phrases, search_text, without_held

        depth = max(2 * k, 50)  # fusion needs both lists deeper than the page, and demoting photos too
        hits = (
            self._passing([h for h in search_text(self.catalog, words, limit=depth) if h.image_id not in liked], flt)
            if words
            else []
        )
        semantic = run_query(
            self.catalog,
            index,
            row,
            q,
            depth if hits or excluding else k,
            threshold,
            exclude_image=liked,
            merge_gap=merge_gap,
            flt=flt,
            sort="score",
            strategy=strategy,
        )
        demoted: dict[int, list[Any]] = {}
        in_videos = HeldInVideos([], {})
        if excluding:
            candidates = [r.image_id for r in semantic if r.image_id is not None and r.video_id is None]
            demoted = holding_phrases(
                self.catalog, excluding, candidates + [h.image_id for h in hits if h.video_id is None]
            )
            # videos: at each hit's moment (HeldInVideos says why not anywhere in the video)
            in_videos = held_in_videos(
                self.catalog,
                excluding,
                [r.video_id for r in semantic if r.video_id is not None]
                + [h.video_id for h in hits if h.video_id is not None],
            )
            hits = [h for h in hits if h.video_id is not None or h.image_id not in demoted]
            hits = [moved for moved in (without_held(h, in_videos) for h in hits) if moved is not None]
        if not hits and not demoted and not in_videos:
            results = semantic
        else:

            def cosine_of(image_ids: list[int]) -> dict[int, float]:
                found = {}
                for image_id in image_ids:
                    v = self.catalog.image_embedding(row.model_id, int(image_id))
                    if v is not None:
                        found[image_id] = float(np.dot(v, q.reshape(-1)))
                return found

            def frame_cosine_of(video_id: int, timestamp: float) -> float | None:
                """The query's cosine with this model's embedding of the frame nearest `timestamp`."""
                v = self.catalog.frame_embedding_near(row.model_id, int(video_id), float(timestamp))
                return None if v is None else float(np.dot(v, q.reshape(-1)))

            results = fuse_with_text(
                self.catalog,
                semantic,
                hits,
                k,
                cosine_of,
                demoted,
                frame_cosine_of=frame_cosine_of,
                merge_gap=merge_gap,
                held=in_videos,
            )
            with_meta(self.catalog, results)
        if len(results) > k:
            del results[k:]
        if sort == "date":
            by_date(results)
        return results

    def _passing(self, hits: list[Any], flt: Filter) -> list[Any]:
        """The text side's hits (photos and videos) whose photo or video passes the filter."""
        if not flt.active:
            return hits
        photos = self.catalog.image_ids_passing([h.image_id for h in hits if h.video_id is None], flt)
        videos = self.catalog.video_ids_passing([h.video_id for h in hits if h.video_id is not None], flt)
        return [h for h in hits if (h.image_id in photos if h.video_id is None else h.video_id in videos)]

    def _has_text(self) -> bool:
        """Whether OCR is on for this library (text was read, or will be at the next index run)."""
        from pixquery.catalog.text import SETTING_OCR

        return self.catalog.get_setting(SETTING_OCR) not in (None, "null")

    def _collapsed_query(
        self,
        parts: Query,
        words: str,
        excluding: Sequence[str],
        index: Any,
        row: Any,
        q: np.ndarray,
        k: int,
        threshold: float | None,
        flt: Filter,
        sort: str,
        strategy: str,
        collapse: bool | float,
    ) -> Results:
        """_run_query (semantic, or fused with the text side), then near-duplicates folded into
        the best of them; sort="date" orders the k pictures kept, not a deeper fetch."""
        from pixquery.search import by_date

        results = self._folded(
            lambda fetch: self._run_query(
                parts, words, excluding, index, row, q, fetch, threshold, flt, "score", strategy
            ),
            k,
            row.model_id,
            collapse,
            size=len(index),
        )
        if sort == "date":
            by_date(results)
        return results

    def _folded(
        self,
        run: Callable[[int], Results],
        k: int,
        model_id: int | None,
        collapse: bool | float,
        size: int | None,
    ) -> Results:
        """The first k of `run(fetch)`'s results (best first) with near-duplicates folded into the
        best of them, by the photos' stored embeddings of `model_id`; fetches more (x4 each time)
        while fewer than k distinct pictures remain and there are more: `run` gave all it was asked
        for, and fewer than `size` (None: no bound but what run finds)."""
        from pixquery import duplicates

        near = duplicates.check_threshold(None if collapse is True else collapse)
        k = max(1, int(k))
        fetch = k * 3 + 8
        while True:
            found = run(fetch)
            ids = [r.image_id for r in found if r.image_id is not None]
            vectors = self.catalog.photo_vectors(model_id, ids) if model_id is not None else {}
            kept = duplicates.collapse_results(list(found), vectors, near)
            if len(kept) >= k or len(found) < fetch or (size is not None and fetch >= size):
                break
            fetch *= 4
        kept = kept[:k]
        for n, r in enumerate(kept, 1):
            r.rank = n
        return Results(kept, found.dropped, found.threshold)

    def duplicates(
        self,
        *,
        threshold: float | None = None,
        keep: str = "largest",
        near: bool = True,
        nprobe: int | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> DuplicateReport:
        """Groups of copies: the same bytes (content hash) and, with near=True, photos whose
        embeddings are within `threshold` (an angular distance; default
        pixquery.duplicates.DEFAULT_THRESHOLD), largest group first, each with the one to keep
        first (keep: largest, oldest, newest or shortest-path). Deletes nothing.
        progress(stage, done, total). Returns a pixquery.duplicates.DuplicateReport."""
        from pixquery import duplicates as dup

        threshold = dup.check_threshold(threshold)
        dup.check_keep(keep)
        store_only.refuse(self, "duplicates")
        model = self._model_row(create=False) if near else None
        return dup.find_duplicates(
            self.catalog, model, threshold=threshold, keep=keep, near=near, nprobe=nprobe, progress=progress
        )

    @staticmethod
    def query_of(
        query: str | Query | None = None,
        *,
        image: str | Path | None = None,
        image_id: int | None = None,
        vector: np.ndarray | None = None,
        add: Sequence[str] = (),
        subtract: Sequence[str] = (),
        image_weight: float = 1.0,
    ) -> Query:
        """The Query that search() runs for these arguments (the inline syntax of a string parsed)."""
        if isinstance(add, str) or isinstance(subtract, str):
            raise PixqueryError("add and subtract take a list of phrases, not one string")
        if query is None:
            parts = query_mod.Query()
        elif isinstance(query, query_mod.Query):
            parts = query
        else:
            parts = query_mod.parse_inline(query)
        for text in add:
            parts = parts.plus(text)
        for text in subtract:
            parts = parts.minus(text)
        if image is not None:
            parts = parts.plus_image(image, image_weight)
        if image_id is not None:
            parts = parts.plus_photo(image_id, image_weight)
        if vector is not None:
            parts = parts.plus_vector(vector, image_weight)
        if not len(parts):
            raise PixqueryError("give a query: a text, an image, an image id or a vector")
        return parts

    def _part_vector(self, part: query_mod.Part, row: IndexRow | None) -> np.ndarray:
        """The embedding of a query part that is not text (combine() embeds the texts)."""
        from pixquery.ingest import pipeline

        if part.kind == query_mod.IMAGE:
            return self.embed_image(part.value)
        if part.kind == query_mod.IMAGE_ID:
            assert row is not None  # search() refused image ids for a store-only library (no rows)
            q = self.catalog.image_embedding(row.model_id, int(part.value))
            if q is None:
                raise PixqueryError(f"no image with id {part.value} in this library")
            return q
        if part.kind == query_mod.UPLOAD:
            if not isinstance(part.value, (bytes, bytearray)):
                raise PixqueryError("an upload part of a query holds the picture's bytes")
            return pipeline.embed_picture(bytes(part.value), self.encoder, name="upload")
        return np.asarray(part.value, dtype=np.float32)  # VECTOR

    def embed_image(self, image: str | Path) -> np.ndarray:
        """An image file's embedding, through the same decode and crop stage as indexing."""
        from pixquery.ingest import pipeline
        from pixquery.ingest.workers import read_bytes

        path = str(image)
        try:
            data = read_bytes(path)
        except OSError as e:
            raise BadImage(path, f"cannot read: {e.strerror or e}") from None
        return pipeline.embed_picture(data, self.encoder, name=path)

    def _threshold(self, threshold: float | str | None) -> float | None:
        if threshold is None:
            return None
        if isinstance(threshold, str) and threshold.replace(" ", "").startswith("p="):
            return self._probability_threshold(threshold.replace(" ", "")[2:])
        if isinstance(threshold, str):
            if threshold != "auto":
                try:
                    threshold = float(threshold)
                except ValueError:
                    raise PixqueryError(
                        f"threshold must be a number between 0 and 1 or 'auto', not {threshold!r}"
                    ) from None
            else:
                enc = self.encoder
                value = self.catalog.get_threshold(enc.name, enc.fingerprint)
                if value is None:
                    raise PixqueryError(
                        f"no calibrated threshold stored for {enc.name}: run pixquery eval on labelled photos first, "
                        "or give a number (an angular distance, e.g. --threshold 0.4)"
                    )
                return value
        if not 0.0 <= float(threshold) <= 1.0:
            raise PixqueryError(f"threshold is an angular distance between 0 and 1, not {threshold}")
        return float(threshold)

    def _probability_threshold(self, text: str) -> float:
        """A match probability p -> the angular distance it corresponds to for this model:
        sigmoid(scale * cos + bias) = p  <=>  cos = (logit(p) - bias) / scale."""
        import math

        from pixquery.search import angular_distance

        try:
            p = float(text)
        except ValueError:
            raise PixqueryError(f"threshold p= needs a probability between 0 and 1, not {text!r}") from None
        if not 0.0 < p < 1.0:
            raise PixqueryError(f"threshold p= needs a probability strictly between 0 and 1, not {p}")
        enc = self.encoder
        scale, bias = getattr(enc, "logit_scale", None), getattr(enc, "logit_bias", None)
        if scale is None or bias is None:
            raise PixqueryError(
                f"{enc.name} is not sigmoid-trained (SigLIP): it has no match probability; "
                "give an angular distance (e.g. --threshold 0.4) or 'auto'"
            )
        return angular_distance((math.log(p / (1 - p)) - float(bias)) / float(scale))

    # -- facts ----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        catalog_bytes = sum(
            (self.path / f).stat().st_size for f in (CATALOG_FILE, CATALOG_FILE + "-wal") if (self.path / f).exists()
        )
        models: list[dict[str, Any]] = []
        out: dict[str, Any] = {
            "library": str(self.path),
            "model": self.model_name,
            "precision": self.precision,
            "folders": self.catalog.folders(),
            "images": self.catalog.count_images(),
            "videos": self.catalog.count_videos(),
            "detections": self.catalog.count_detections(),
            "catalog_bytes": catalog_bytes,
            "excluded": self._exclusions(),
            "models": models,
        }
        store = store_only.settings(self.catalog)
        if store is not None:
            shards, vectors, failed = self.catalog.loaded_totals()
            out["store_only"] = {
                "kind": store["kind"],
                "params": store["params"],
                "shards": shards,
                "vectors": vectors,
                "failed": failed,
                "sources": [uri for _, uri, _ in self.catalog.shard_sources()],
            }
        for m in self.catalog.models():
            n = self.catalog.count_embeddings(m.id)
            idx = self.catalog.active_index(m.id)
            models.append(
                {
                    "name": m.name,
                    "fingerprint": m.fingerprint,
                    "dim": m.dim,
                    "embeddings": n,
                    "threshold": m.threshold,
                    "index": None
                    if idx is None
                    else {
                        "kind": idx.kind,
                        "params": idx.params,
                        "entries": self.catalog.count_index_entries(idx.id),
                        "size_bytes": idx.size_bytes,
                        "build_seconds": idx.build_seconds,
                        "built_at": idx.built_at,
                        "recall": idx.recall,
                        "path": idx.path,
                    },
                }
            )
        return out

    def _exclusions(self) -> dict[str, object]:
        """What scans leave out: by default, per folder (--exclude), and the ignore file's name."""
        from pixquery.ingest import exclude as excluding

        return {
            "by_default": list(excluding.DEFAULT_SKIPS),
            "folders": self.catalog.folder_excludes(),
            "ignore_file": excluding.IGNORE_FILE,
        }


class _StatusFile(IndexProgress):
    """Forwards progress callbacks and mirrors them, at most every half second, into a small
    JSON file (atomic rename) so another process (the server) can show indexing progress."""

    def __init__(self, path: Path, inner: IndexProgress):
        self.path, self.inner = path, inner
        self.state = {
            "pid": os.getpid(),
            "stage": "starting",
            "done": 0,
            "total": 0,
            "failed": 0,
            "started_at": time.time(),
        }
        self._last = 0.0

    def __enter__(self) -> _StatusFile:
        self._write(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        self.state["updated_at"] = time.time()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)

    def scanned(self, found: int, to_embed: int, deleted: int) -> None:
        self.state.update(stage="scanned", found=found, total=to_embed)
        self._write(force=True)
        self.inner.scanned(found, to_embed, deleted)

    def reading_text(self, done: int, total: int) -> None:
        self.state.update(stage="reading text", done=done, total=total)
        self._write()
        self.inner.reading_text(done, total)

    def started_embedding(self, total: int) -> None:
        self.state.update(stage="embedding", total=total)
        self._write(force=True)
        self.inner.started_embedding(total)

    def advance(self, done: int, failed: int) -> None:
        self.state.update(done=done, failed=failed)
        self._write()
        self.inner.advance(done, failed)

    def failure(self, path: str, reason: str) -> None:
        # info, not warning: the run's report (and the CLI's summary) lists every failure already
        log.info("skipped %s: %s", path, reason)
        self.inner.failure(path, reason)

    def stage(self, text: str) -> None:
        self.state.update(stage=text)
        self._write(force=True)
        self.inner.stage(text)

    def reading_metadata(self, done: int, total: int) -> None:
        self.state.update(stage="reading dates", done=done, total=total)
        self._write(force=done in (0, total))
        if hasattr(self.inner, "reading_metadata"):  # progress objects written before it existed
            self.inner.reading_metadata(done, total)

    def missing_plugin(self, fmt: str, count: int, reason: str) -> None:
        self.inner.missing_plugin(fmt, count, reason)

    def loading(self, done: int, total: int) -> None:
        self.state.update(loaded=done, to_load=total)
        self._write(force=done in (0, total))
        self.inner.loading(done, total)


class _FileLock:
    """One index run per library at a time (flock: released by the OS if the process dies)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> _FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise LibraryError(
                f"another pixquery process is indexing the library at {self.path.parent}; wait for it to finish"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


__all__ = ["Library", "Query", "SearchResult", "Results", "IndexReport", "IndexProgress", "default_library_path"]
