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

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixquery.encoders.base import PreprocessConfig, l2_normalize
from pixquery.errors import PixqueryError

REQUIRED = (
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
)
log = logging.getLogger(__name__)
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


@contextlib.contextmanager
def writing_model_folder(out_dir: Path):
    """Write a model folder atomically: yields an empty temp folder beside `out_dir` (with visual/
    and textual/), which replaces `out_dir` when the block ends, or is removed if it raises."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "visual").mkdir(parents=True)
        (tmp / "textual").mkdir()
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder left behind
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


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


def _short_context_graph(src: Path, context: int):
    """The text tower made to accept any sequence length up to `context` (an onnx ModelProto), or
    None when the graph is not the causal CLIP text transformer this knows how to change.

    A CLIP text tower reads its output at the end-of-text token through a causal mask, so tokens
    after it never change the result: a query of 6 tokens needs 7 positions, not 77 (10x less work).
    open_clip's export fixes the length in four places, each changed to the input's length L:
    the input's shape, the positional-embedding initializer ([context, width] -> first L rows), the
    attention masks (constants [..., context, context] -> [..., L, L]) and the reshape targets
    (int64 constants [context] -> [L])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    if len(g.input) != 1 or len(g.input[0].type.tensor_type.shape.dim) != 2:
        return None
    dim = g.input[0].type.tensor_type.shape.dim[1]
    if dim.dim_value != context:
        return None
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 15:
        return None  # Shape(start, end) needs opset 15
    dim.ClearField("dim_value")
    dim.dim_param = "context"
    inp = g.input[0].name
    new = [
        helper.make_node("Shape", [inp], ["pq_len"], start=1, end=2, name="pq_len"),
        helper.make_node("Concat", ["pq_len", "pq_len"], ["pq_len2"], axis=0, name="pq_len2"),
    ]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(v, np.int64), n)
            for n, v in (("pq_zero1", [0]), ("pq_zero2", [0, 0]), ("pq_axis0", [0]), ("pq_axes2", [-2, -1]))
        ]
    )
    rename: dict[str, str] = {}
    for init in g.initializer:
        if len(init.dims) == 2 and init.dims[0] == context and init.data_type == TensorProto.FLOAT:
            new.append(helper.make_node("Slice", [init.name, "pq_zero1", "pq_len", "pq_axis0"], [init.name + "/pq"]))
            rename[init.name] = init.name + "/pq"
    masks = reshapes = 0
    dead = set()
    for node in g.node:
        if node.op_type != "Constant" or not node.attribute or node.attribute[0].name != "value":
            continue
        t = node.attribute[0].t
        if list(t.dims)[-2:] == [context, context]:
            new.append(
                helper.make_node("Slice", [node.output[0], "pq_zero2", "pq_len2", "pq_axes2"], [node.output[0] + "/pq"])
            )
            rename[node.output[0]] = node.output[0] + "/pq"
            masks += 1
        elif (
            t.data_type == TensorProto.INT64 and list(t.dims) == [1] and numpy_helper.to_array(t).tolist() == [context]
        ):
            rename[node.output[0]] = "pq_len"
            dead.add(node.output[0])
            reshapes += 1
    if len([k for k in rename if k not in dead]) - masks != 1 or masks == 0:
        return None  # not exactly one positional embedding, or no causal mask: leave the model alone
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    nodes = [n for n in g.node if not (n.op_type == "Constant" and n.output[0] in dead)]
    del g.node[:]
    g.node.extend([n for n in nodes if n.op_type == "Constant"] + new + [n for n in nodes if n.op_type != "Constant"])
    del g.value_info[:]  # shapes inferred with the fixed length
    return model


def derived_copy_paths(
    model: Path, tag: str, cache_dir: str | Path | None = None, stem: str | None = None
) -> tuple[Path, Path]:
    """Where a copy made from `model` (tag "int8", "ctx") lives: beside it, or in the cache folder
    when the model's folder is read-only. The source's fingerprint in both names keeps a re-exported
    model from meeting a stale copy."""
    from pixquery.encoders.quantize import default_cache_dir

    fp = file_fingerprint([model])
    beside = model.with_name(f"{stem or model.stem}.{tag}.{fp}.onnx")
    cached = Path(cache_dir or default_cache_dir()) / f"{model.parent.name}-{fp}.{tag}.onnx"
    return beside, cached


def short_context_copy(text_model: Path, context: int, cache_dir: str | Path | None = None) -> Path | None:
    """A copy of the text tower that takes sequences shorter than `context` (see
    _short_context_graph), checked to give the same embeddings as the original, made once and
    cached like the int8 copies (beside the model, else in the cache folder). None when it does
    not apply (then a marker file remembers that, so the check runs once)."""
    import onnxruntime as ort

    beside, cached = derived_copy_paths(text_model, "ctx", cache_dir)
    for candidate in (beside, cached):
        if candidate.is_file():
            return candidate
        if candidate.with_suffix(".none").is_file():
            return None
    try:
        import onnx
    except ImportError:  # the onnx package is optional: queries just run at full length
        log.info("no short-context text model for %s: the onnx package is not installed", text_model)
        return None
    try:
        model = _short_context_graph(text_model, context)
    except Exception as e:  # an unusual graph: never worse than the original
        log.info("no short-context text model for %s: %s", text_model, e)
        model = None
    ok = False
    if model is not None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            full = ort.InferenceSession(str(text_model), opts, providers=["CPUExecutionProvider"])
            short = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            inp = full.get_inputs()[0]
            ids = np.zeros((2, context), _ORT_DTYPES.get(inp.type, np.int64))
            ids[0, :5] = [
                49406,
                320,
                1929,
                530,
                49407,
            ]  # <start> a dog on <end> (CLIP's ids; any ids with the max last work)
            ids[1, :3] = [49406, 1125, 49407]
            n = int(ids.argmax(1).max()) + 1
            a, b = full.run(None, {inp.name: ids})[0], short.run(None, {inp.name: ids[:, :n]})[0]
            ok = bool(np.allclose(a, b, rtol=1e-4, atol=1e-5))
        except Exception as e:
            log.info("short-context text model for %s failed its check: %s", text_model, e)
    for target in (beside, cached):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not ok:
                _none_marker(target).write_text("the text tower cannot be shortened; queries run at full length\n")
                return None
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            onnx.save(model, str(tmp))
            os.replace(tmp, target)
            return target
        except OSError:
            continue
    return None


OPT_GRAPH, OPT_DATA, OPT_MANIFEST = "model.onnx", "model.onnx.data", "manifest.json"
# Token ids that every check runs: any ids below the vocabulary size with the highest last work for
# the graphs pixquery makes (CLIP reads the highest id); below 100, so within every tokenizer's
# vocabulary (SigLIP's, XLM-R's and the tiny test tokenizers' too).
_CHECK_IDS = ([49, 20, 33, 41, 20, 60, 99], [49, 20, 25, 98])


def _data_sample(path: Path, size: int) -> str:
    """sha256 of a file's size and 16 spread 64 KiB samples: ~1 MB read whatever the file's size
    (about a ms at each start)."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for i in range(16 if size else 0):
            f.seek(max(0, min(size - 65536, size * i // 15)))
            h.update(f.read(65536))
    return h.hexdigest()


def _check_ids(session) -> dict:
    inp = session.get_inputs()[0]
    dtype = _ORT_DTYPES.get(inp.type, np.int64)
    fixed = inp.shape[1] if isinstance(inp.shape[1], int) else None
    out = {}
    for ids in _CHECK_IDS:
        row = np.zeros((1, fixed or len(ids)), dtype)
        row[0, : len(ids)] = ids
        out[len(ids)] = row
    return out


def _session_options(level, *, threads: int = 1, prepack: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    return opts


def optimized_copy_paths(model: Path, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Where the pre-optimised copy of `model` lives (a folder: the graph, its weights as external
    data, a manifest): beside the model, or in the cache folder when the model's folder is
    read-only. Its name holds the source's fingerprint and the ONNX Runtime version, so a
    re-exported model or another ONNX Runtime never meets a copy made for something else."""
    import onnxruntime as ort

    from pixquery.encoders.quantize import default_cache_dir

    key = f"{file_fingerprint([model])}-ort{ort.__version__}"
    beside = model.with_name(f"{model.stem}.opt.{key}")
    cached = Path(cache_dir or default_cache_dir()) / f"{model.parent.name}-{model.stem}.opt.{key}"
    return beside, cached


def _valid_optimized(folder: Path, source_key: str) -> bool:
    """The manifest matches the files: their sizes, the graph's sha256, the weights' samples."""
    try:
        manifest = json.loads((folder / OPT_MANIFEST).read_text(encoding="utf-8"))
        graph, data = folder / OPT_GRAPH, folder / OPT_DATA
        if manifest.get("source") != source_key or graph.stat().st_size != manifest["graph_size"]:
            return False
        if hashlib.sha256(graph.read_bytes()).hexdigest() != manifest["graph_sha256"]:
            return False
        st = data.stat()
        # Any write to the weights since they were checked changes their ctime (which, unlike
        # the mtime, cannot be set back); the samples catch a file swapped in with its ctime.
        if [st.st_size, st.st_ino, st.st_ctime_ns] != [
            manifest["data_size"],
            manifest["data_ino"],
            manifest["data_ctime_ns"],
        ]:
            return False
        return _data_sample(data, st.st_size) == manifest["data_sample"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build_optimized(source: Path, tmp: Path, source_key: str) -> bool:
    """Write the optimised copy of `source` into the empty folder `tmp`; True when it gives the
    same embeddings as a session over `source` (max abs diff <= 1e-6, raw outputs), loaded the way
    it will be loaded (optimisations off, with and without pre-packed weights)."""
    import onnxruntime as ort

    GO = ort.GraphOptimizationLevel
    # EXTENDED, not ALL: what ALL adds (NCHWc layouts) is specific to this CPU and is for
    # convolutions; the text towers have none. The same fusions as ALL otherwise.
    opts = _session_options(GO.ORT_ENABLE_EXTENDED)
    opts.optimized_model_filepath = str(tmp / OPT_GRAPH)
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", OPT_DATA)
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(
        str(source), _session_options(GO.ORT_ENABLE_ALL), providers=["CPUExecutionProvider"]
    )
    name = reference.get_inputs()[0].name
    diff = 0.0
    for prepack in (True, False):
        copy = ort.InferenceSession(
            str(tmp / OPT_GRAPH),
            _session_options(GO.ORT_DISABLE_ALL, prepack=prepack),
            providers=["CPUExecutionProvider"],
        )
        for ids in _check_ids(reference).values():
            a, b = reference.run(None, {name: ids})[0], copy.run(None, {name: ids})[0]
            diff = max(diff, float(np.abs(a.astype(np.float64) - b).max()))
        del copy
    if diff > 1e-6:
        log.info("the optimised copy of %s differs by %.2g: not used", source, diff)
        return False
    graph, data = tmp / OPT_GRAPH, tmp / OPT_DATA
    if not data.is_file():  # a graph with no weight over 1 KiB: an empty weights file keeps one layout
        data.write_bytes(b"")
    st = data.stat()
    manifest = {
        "source": source_key,
        "graph_size": graph.stat().st_size,
        "graph_sha256": hashlib.sha256(graph.read_bytes()).hexdigest(),
        "data_size": st.st_size,
        "data_ino": st.st_ino,
        "data_ctime_ns": st.st_ctime_ns,
        "data_sample": _data_sample(data, st.st_size),
        "max_abs_diff": diff,
        "onnxruntime": ort.__version__,
    }
    (tmp / OPT_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return True


def _none_marker(folder: Path) -> Path:
    return folder.with_name(folder.name + ".none")


def optimized_copy(source: Path, cache_dir: str | Path | None = None) -> Path | None:
    """The graph file of a pre-optimised copy of the tower `source`: ONNX Runtime's graph
    optimisations done once and saved (weights as external data, which ONNX Runtime memory-maps),
    so a session over it loads with optimisations off: ~10 ms instead of ~0.4-0.9 s for the
    254 MB ViT-B/32 text tower (docs/performance.md). Made once, atomically (a temp folder
    renamed into place), checked to give the same outputs, and validated against its manifest at
    each use: a corrupt or stale copy is removed and made again, never used. None when no copy
    can be made (then a marker remembers a failed check, and the caller loads `source` as before)."""
    beside, cached = optimized_copy_paths(source, cache_dir)
    source_key = beside.name.split(".opt.", 1)[1]
    for candidate in (beside, cached):
        if _none_marker(candidate).is_file():
            return None
        if candidate.is_dir():
            if _valid_optimized(candidate, source_key):
                return candidate / OPT_GRAPH
            log.warning("%s is corrupt or stale: making it again", candidate)
            shutil.rmtree(candidate, ignore_errors=True)
    for target in (beside, cached):
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                ok = _build_optimized(source, tmp, source_key)
            except OSError:
                raise  # cannot write here: the next place
            except Exception as e:  # an op this ONNX Runtime cannot save: never worse than before
                log.info("no optimised copy of %s: %s", source, e)
                ok = False
            if not ok:
                _none_marker(target).write_text(
                    "the optimised copy did not give the same outputs; the model is loaded as it is\n"
                )
                return None
            try:
                os.replace(tmp, target)
            except OSError:
                if not _valid_optimized(target, source_key):  # not another process's copy, made meanwhile
                    raise
            return target / OPT_GRAPH
        except OSError:
            continue  # read-only model folder: the cache folder
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return None


class OnnxClipEncoder:
    """The Encoder protocol over ONNX Runtime. `precision="int8"` uses a dynamically quantised copy
    of each tower (made once and cached, see pixquery.encoders.quantize)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        text_cache_size: int = 256,
        text_threads: int | None = None,
        spin: bool | None = None,
        provider: str | None = None,
        short_context: bool = True,
        optimized_copy: bool | None = None,
        prepack: bool = True,
    ):
        """threads: ONNX Runtime intra-op threads for images (default: physical cores, or
        $PIXQUERY_THREADS); text_threads: the same for the text tower (default: threads).
        spin: let idle ORT threads busy-wait between operators (default off, or $PIXQUERY_ORT_SPIN):
        spinning buys little and takes the CPU from the decoders beside the encoder.
        provider: "auto" (CUDA when onnxruntime-gpu sees a GPU, else CPU), "cpu" or "cuda"
        (default auto, or $PIXQUERY_PROVIDER). short_context: run text queries at their own length
        (up to the end-of-text token) instead of the full context, with a checked copy of the text
        tower (see short_context_copy): same embeddings, about 10x less work for a short query.
        optimized_copy: load the text tower from its pre-optimised copy (see optimized_copy; CPU
        only): same outputs, a session in ~10 ms instead of ~0.5 s (default on;
        $PIXQUERY_ORT_OPTIMIZED_COPY=0 turns it off). prepack: let ONNX Runtime
        re-lay the weights for its matmuls when the session is made (~0.1 s for the ViT-B/32 text
        tower, then each query ~8 ms instead of ~16 ms); a process that answers one query and exits
        (the CLI's search) turns it off: outputs differ by ~1e-7."""
        self.model_dir = Path(model_dir).expanduser()
        if not self.model_dir.is_dir():
            raise PixqueryError(f"model folder not found: {self.model_dir}")
        check_layout(self.model_dir)
        if precision not in ("fp32", "int8"):
            raise PixqueryError(f"precision must be 'fp32' or 'int8', not {precision!r}")
        self.precision = precision
        env_threads = os.environ.get("PIXQUERY_THREADS", "").strip()
        self.threads = threads or (
            int(env_threads) if env_threads.isdigit() and int(env_threads) > 0 else physical_cores()
        )
        self.text_threads = text_threads or self.threads
        self.spin = spin if spin is not None else bool(_env_flag("PIXQUERY_ORT_SPIN"))
        self.provider_preference = (provider or os.environ.get("PIXQUERY_PROVIDER") or "auto").lower()
        if self.provider_preference not in PROVIDER_CHOICES:
            raise PixqueryError(
                f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {self.provider_preference!r}"
            )
        self.short_context = short_context
        env_copy = _env_flag("PIXQUERY_ORT_OPTIMIZED_COPY")
        self.optimized_copy = optimized_copy if optimized_copy is not None else env_copy is not False
        self.prepack = prepack
        self.providers: dict[str, str] = {}  # tower -> the execution provider its session runs on
        self.session_paths: dict[str, Path] = {}  # tower -> the model file its session was made from
        self._cache_dir = cache_dir
        self.config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self.name = name or self.model_dir.name
        # Test models (scripts/make_tiny_models.py, `pixquery export --random`) say so in their
        # config: every command that uses one warns that its rankings mean nothing.
        self.random_weights = bool(self.config.get("random_weights", False))
        self.dim = int(self.config["embed_dim"])
        raw = json.loads((self.model_dir / "visual" / "preprocess_cfg.json").read_text(encoding="utf-8"))
        self.preprocess_cfg = PreprocessConfig.from_dict(raw)
        text_cfg = self.config.get("text_cfg", {})
        self.context_length = int(text_cfg.get("context_length", 77))
        # Only a causal text transformer read at CLIP's end token (the highest id) may be run on the
        # ids up to that token; SigLIP reads the last position, XLM-R/NLLB pool over every token.
        self._causal_clip_text = "hf_tokenizer_name" not in text_cfg and not text_cfg.get("no_causal_mask")
        # SigLIP-trained models score a pair as sigmoid(scale * cosine + bias): a probability that
        # the text matches, with the same meaning for every query (see match_probability).
        self.logit_scale = self.config.get("logit_scale")
        self.logit_bias = self.config.get("logit_bias")
        files = [self.model_dir / f for f in REQUIRED]
        self.fingerprint = file_fingerprint(files, extra=precision if precision != "fp32" else "")
        self._sessions: dict[str, object] = {}
        self._warm: set[str] = set()  # towers warm_up has run
        self._load_lock = threading.Lock()  # slow (session creation, quantisation)
        self._lock = threading.Lock()  # fast (the query cache)
        self._tokenizer = None
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size

    def __repr__(self) -> str:
        return (
            f"OnnxClipEncoder({self.name!r}, dim={self.dim}, precision={self.precision!r}, dir={str(self.model_dir)!r})"
        )

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
        if tower == "textual" and self.short_context:
            path = short_context_copy(path, self.context_length, self._cache_dir) or path
        if self.precision == "int8":
            from pixquery.encoders.quantize import quantized_copy

            path = quantized_copy(path, cache_dir=self._cache_dir, stem="model")
        providers = _providers(self.provider_preference)
        optimized = None
        if tower == "textual" and self.optimized_copy and providers == ["CPUExecutionProvider"]:
            optimized = optimized_copy(path, self._cache_dir)
        opts = ort.SessionOptions()
        # One inference at a time per session; its operators use intra-op threads (one per
        # physical core: a second thread on a hyper-thread sibling slows matmuls down).
        opts.intra_op_num_threads = self.text_threads if tower == "textual" else self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        if not self.prepack:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        opts.log_severity_level = 3  # errors only: ORT's notes on unused initializers are noise here
        if optimized is not None:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done once, saved
            try:
                session = ort.InferenceSession(str(optimized), opts, providers=providers)
                self.providers[tower] = session.get_providers()[0]
                self.session_paths[tower] = optimized
                return session
            except Exception as e:  # validated a moment ago, so unlikely: load the source as before
                log.warning("cannot load %s (%s); loading %s", optimized, str(e).splitlines()[0][:200], path)
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:
            if providers == ["CPUExecutionProvider"]:
                raise PixqueryError(f"ONNX Runtime cannot load {path}: {e}") from None
            # A CUDA build without a usable GPU or driver: run on the CPU, and say so once.
            log.warning("the GPU execution provider failed (%s); using the CPU", str(e).splitlines()[0][:200])
            try:
                session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e2:
                raise PixqueryError(f"ONNX Runtime cannot load {path}: {e2}") from None
        self.providers[tower] = session.get_providers()[0]
        self.session_paths[tower] = path
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
        (the server and an interactive session call this at start-up; the ingest pipeline calls it
        for the image tower while the decoders fill the first batch). A tower runs once only."""
        for tower in towers:
            if tower in self._warm:
                continue
            self._warm.add(tower)
            if tower == "textual":
                self._run("textual", self.tokenize(["a photo"]))
            else:
                size = self.preprocess_cfg.size
                self._run("visual", np.zeros((1, 3, size, size), np.float32))

    def _run(self, tower: str, x: np.ndarray) -> np.ndarray:
        session = self._session(tower)
        inp = session.get_inputs()[0]
        if inp.type not in _ORT_DTYPES:  # e.g. a graph that takes uint8 pixels and normalises itself
            raise PixqueryError(
                f"{self.model_dir / tower / 'model.onnx'}: input {inp.name} is {inp.type}; "
                "pixquery feeds float images and integer token ids"
            )
        x = x.astype(_ORT_DTYPES[inp.type], copy=False)
        if (
            tower == "textual"
            and self._causal_clip_text
            and len(inp.shape) == 2
            and not isinstance(inp.shape[1], int)
            and len(x)
        ):
            # A short-context text tower: positions after the last end-of-text token (the highest id,
            # where CLIP reads its output) change nothing through the causal mask.
            x = np.ascontiguousarray(x[:, : int(x.argmax(axis=1).max()) + 1])
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

    def match_probability(self, cosine):
        """For a sigmoid-trained model (SigLIP, SigLIP 2, nllb-clip-siglip): the model's own
        probability that text and image match, sigmoid(logit_scale * cosine + logit_bias), the
        quantity it was trained on, so one threshold means the same for every query. None for
        softmax-trained (CLIP) models, whose cosine has no such calibration."""
        if self.logit_bias is None or self.logit_scale is None:
            return None
        z = float(self.logit_scale) * np.asarray(cosine, np.float64) + float(self.logit_bias)
        return 1.0 / (1.0 + np.exp(-z))

    # -- Encoder protocol ---------------------------------------------------------------------------
    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._run("visual", batch)

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenizer is None:
            from pixquery.encoders.tokenizer import tokenizer_for

            self._tokenizer = tokenizer_for(
                self.model_dir / "textual",
                self.config.get("text_cfg", {}),
                self.context_length,
                cache_dir=self._cache_dir,
            )
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
