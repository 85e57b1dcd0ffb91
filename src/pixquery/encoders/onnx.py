"""CLIP on ONNX Runtime, over a model folder in the layout immich publishes on the Hugging Face hub.

    config.json                          open_clip model config: embed_dim, vision_cfg, text_cfg
    visual/model.onnx                    float image (n, 3, H, W) -> embedding
    visual/preprocess_cfg.json           size, mean, std, interpolation, resize_mode, fill_color
    textual/model.onnx                   int32 or int64 ids (n, context_length) -> embedding
    textual/tokenizer.json               (+ tokenizer_config.json, special_tokens_map.json)

Each tower's session is created on first use, so a text search never loads the image tower and
indexing never loads the text tower. immich's own exports fix the batch at 1; that is read from
the session and handled by looping. Outputs are L2-normalised here whatever the graph does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from pixquery.encoders.base import PreprocessConfig, l2_normalize
from pixquery.errors import PixqueryError

REQUIRED = ("config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx", "textual/tokenizer.json")
log = logging.getLogger("pixquery")
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def check_layout(model_dir: Path) -> None:
    missing = [f for f in REQUIRED if not (model_dir / f).is_file()]
    if missing:
        raise PixqueryError(
            f"{model_dir} is not a complete CLIP model folder: missing {', '.join(missing)}. Expected the "
            f"immich layout ({', '.join(REQUIRED)}); `pixquery export` writes one from open_clip."
        )


def physical_cores() -> int:
    """Cores, not hyper-threads: a second ORT thread on a sibling hyper-thread slows matmuls down."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        allowed = os.cpu_count() or 1
    try:
        pairs = set()
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                    pairs.add((phys, core))
        cores = len(pairs) or allowed
    except OSError:
        cores = (os.cpu_count() or 2) // 2 or 1
    return max(1, min(allowed, cores))


def file_fingerprint(paths: Sequence[Path], extra: str = "") -> str:
    """Cheap identity of model files: names, sizes and five 64 KiB samples of each (a few ms even for
    a 1 GB file); two random initialisations of one architecture have equal sizes but not bytes."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            for frac in (0, 0.25, 0.5, 0.75, 1):
                f.seek(max(0, int(size * frac) - (65536 if frac == 1 else 0)))
                h.update(f.read(65536))
    return h.hexdigest()[:16]


PROVIDER_CHOICES = ("auto", "cpu", "cuda")


def _providers(preference: str = "auto") -> list:
    """Execution providers to try, best first: CUDA where this onnxruntime build has it (the
    onnxruntime-gpu package) unless the CPU is asked for, then the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    out: list = []
    if preference in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        # HEURISTIC: no cuDNN benchmarking of every convolution at start-up (RN50 has many).
        out.append(("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
    return out + ["CPUExecutionProvider"]


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


class OnnxClipEncoder:
    """The Encoder protocol over ONNX Runtime. `precision="int8"` uses a dynamically quantised copy
    of each tower (made once and cached, see pixquery.encoders.quantize)."""

    def __init__(self, model_dir: str | Path, *, name: str | None = None, precision: str = "fp32",
                 threads: int | None = None, cache_dir: str | Path | None = None, text_cache_size: int = 256,
                 text_threads: int | None = None, spin: bool | None = None, provider: str | None = None):
        """threads: ONNX Runtime intra-op threads for images (default: physical cores, or
        $PIXQUERY_THREADS); text_threads: the same for the text tower (default: threads).
        spin: let idle ORT threads busy-wait between operators (default off, or $PIXQUERY_ORT_SPIN):
        spinning buys little and takes the CPU from the decoders beside the encoder.
        provider: "auto" (CUDA when onnxruntime-gpu sees a GPU, else CPU), "cpu" or "cuda"
        (default auto, or $PIXQUERY_PROVIDER)."""
        self.model_dir = Path(model_dir).expanduser()
        if not self.model_dir.is_dir():
            raise PixqueryError(f"model folder not found: {self.model_dir}")
        check_layout(self.model_dir)
        if precision not in ("fp32", "int8"):
            raise PixqueryError(f"precision must be 'fp32' or 'int8', not {precision!r}")
        self.precision = precision
        env_threads = os.environ.get("PIXQUERY_THREADS", "").strip()
        self.threads = threads or (int(env_threads) if env_threads.isdigit() and int(env_threads) > 0 else physical_cores())
        self.text_threads = text_threads or self.threads
        self.spin = spin if spin is not None else bool(_env_flag("PIXQUERY_ORT_SPIN"))
        self.provider_preference = (provider or os.environ.get("PIXQUERY_PROVIDER") or "auto").lower()
        if self.provider_preference not in PROVIDER_CHOICES:
            raise PixqueryError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {self.provider_preference!r}")
        self.providers: dict[str, str] = {}  # tower -> the execution provider its session runs on
        self._cache_dir = cache_dir
        self.config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self.name = name or self.model_dir.name
        self.dim = int(self.config["embed_dim"])
        raw = json.loads((self.model_dir / "visual" / "preprocess_cfg.json").read_text(encoding="utf-8"))
        self.preprocess_cfg = PreprocessConfig.from_dict(raw)
        self.context_length = int(self.config.get("text_cfg", {}).get("context_length", 77))
        files = [self.model_dir / f for f in REQUIRED]
        self.fingerprint = file_fingerprint(files, extra=precision if precision != "fp32" else "")
        self._sessions: dict[str, object] = {}
        self._load_lock = threading.Lock()  # slow (session creation, quantisation)
        self._lock = threading.Lock()  # fast (the query cache)
        self._tokenizer = None
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size

    def __repr__(self) -> str:
        return f"OnnxClipEncoder({self.name!r}, dim={self.dim}, precision={self.precision!r}, dir={str(self.model_dir)!r})"

    # -- sessions ---------------------------------------------------------------------------------
    def _session(self, tower: str):
        session = self._sessions.get(tower)
        if session is None:
            with self._load_lock:  # two first requests must not build two sessions
                session = self._sessions.get(tower) or self._create_session(tower)
                self._sessions[tower] = session
        return session

    def _create_session(self, tower: str):
        import onnxruntime as ort

        path = self.model_dir / tower / "model.onnx"
        if self.precision == "int8":
            from pixquery.encoders.quantize import quantized_copy

            path = quantized_copy(path, cache_dir=self._cache_dir)
        opts = ort.SessionOptions()
        # One inference at a time per session; its operators use intra-op threads (one per
        # physical core: a second thread on a hyper-thread sibling slows matmuls down).
        opts.intra_op_num_threads = self.text_threads if tower == "textual" else self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        providers = _providers(self.provider_preference)
        try:
            session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:
            if providers == ["CPUExecutionProvider"]:
                raise PixqueryError(f"ONNX Runtime cannot load {path}: {e}") from None
            # A CUDA build without a usable GPU or driver: run on the CPU, and say so once.
            log.warning("pixquery: the GPU execution provider failed (%s); using the CPU", str(e).splitlines()[0][:200])
            try:
                session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e2:
                raise PixqueryError(f"ONNX Runtime cannot load {path}: {e2}") from None
        self.providers[tower] = session.get_providers()[0]
        return session

    @property
    def device(self) -> str:
        """Where the image tower runs: "cuda" or "cpu" (creates the image session if needed)."""
        self._session("visual")
        return "cuda" if self.providers.get("visual") == "CUDAExecutionProvider" else "cpu"

    @property
    def preferred_batch_size(self) -> int:
        """Images per encoder call, chosen by measurement (docs/performance.md): 32 on the CPU
        (16..64 are within noise of each other; memory grows with the batch), 256 on a GPU."""
        return 256 if self.device == "cuda" else 32

    def warm_up(self, towers: Sequence[str] = ("textual",)) -> None:
        """Create the sessions now and run each tower once, so the first real call is fast
        (the server and an interactive session call this at start-up)."""
        for tower in towers:
            if tower == "textual":
                self._run("textual", self.tokenize(["a photo"]))
            else:
                size = self.preprocess_cfg.size
                self._run("visual", np.zeros((1, 3, size, size), np.float32))

    def _run(self, tower: str, x: np.ndarray) -> np.ndarray:
        session = self._session(tower)
        inp = session.get_inputs()[0]
        if inp.type not in _ORT_DTYPES:  # e.g. a graph that takes uint8 pixels and normalises itself
            raise PixqueryError(f"{self.model_dir / tower / 'model.onnx'}: input {inp.name} is {inp.type}; "
                                "pixquery feeds float images and integer token ids")
        x = x.astype(_ORT_DTYPES[inp.type], copy=False)
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None  # immich exports: batch 1
        if not fixed or fixed == len(x):
            out = session.run(None, {inp.name: x})[0]
        else:
            parts = []
            for i in range(0, len(x), fixed):
                chunk = x[i : i + fixed]
                pad = fixed - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                parts.append(session.run(None, {inp.name: chunk})[0][: fixed - pad])
            out = np.concatenate(parts)
        return l2_normalize(out.reshape(len(x), -1))

    # -- Encoder protocol ---------------------------------------------------------------------------
    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._run("visual", batch)

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenizer is None:
            from pixquery.encoders.tokenizer import ClipTokenizer, pad_id_for

            textual = self.model_dir / "textual"
            pad_id = pad_id_for(self.config.get("text_cfg", {}), textual)
            self._tokenizer = ClipTokenizer(textual / "tokenizer.json", self.context_length, pad_id)
        return self._tokenizer(texts)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        missing = []
        with self._lock:  # search re-asks the same query (paging, filters): answer from the LRU
            for i, t in enumerate(texts):
                hit = self._text_cache.get(t)
                if hit is None:
                    missing.append(i)
                else:
                    self._text_cache.move_to_end(t)
                    out[i] = hit
        if missing:
            todo = list(dict.fromkeys(texts[i] for i in missing))
            emb = dict(zip(todo, self._run("textual", self.tokenize(todo))))
            for i in missing:
                out[i] = emb[texts[i]]
            with self._lock:
                for t, e in emb.items():
                    self._text_cache[t] = e.copy()
                    self._text_cache.move_to_end(t)
                while len(self._text_cache) > self._text_cache_size:
                    self._text_cache.popitem(last=False)
        return out
