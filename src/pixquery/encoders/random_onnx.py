"""Random-weight CLIP models in the immich ONNX layout, written with numpy and onnx only (no torch).

The graphs are open_clip's architectures written out operator by operator, for any size given by
an open_clip model config (the tiny test models, or full-size ViT-B-32 / RN50 for benchmarks):

    VisionTransformer  patch conv (no bias), class token, learned positional embedding, ln_pre,
                       pre-LN residual blocks (multi-head attention, MLP with GELU or QuickGELU),
                       ln_post on the class token, projection
    ModifiedResNet     3-conv stem + average pool, bottleneck blocks (average-pool downsampling in
                       the block and its shortcut), attention pool (mean token + positional
                       embedding, multi-head attention read at the mean token), eval-mode batch norm
    text transformer   token + positional embedding, the same residual blocks under a causal mask,
                       ln_final, the features at the highest token id (end of text), projection

Both towers end L2-normalised, as `pixquery export` writes them (encode_*(normalize=True)).
Weights are drawn from one seeded numpy generator in open_clip's state-dict order, and are also
saved under open_clip's state-dict names (open_clip_model.safetensors + open_clip_config.json, the
files open_clip's `local-dir:` loader reads), so the torch tests can load them into open_clip's own
model and check that these graphs compute the same embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pixquery.encoders.clip_bpe import BPE_VOCAB, EOT, SOT, build_clip_tokenizer
from pixquery.encoders.onnx import writing_model_folder
from pixquery.errors import PixqueryError

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; older onnxruntime releases read it too
# open_clip's preprocessing defaults (OpenAI mean/std, bicubic, shortest side), as export writes them.
OPENAI_PREPROCESS = {
    "size": [224, 224],
    "mode": "RGB",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}
_VISION_DEFAULTS = {"image_size": 224, "layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16}
_TEXT_DEFAULTS = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0}
_KNOWN = {
    "": {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"},
    "vision_cfg": set(_VISION_DEFAULTS),
    "text_cfg": set(_TEXT_DEFAULTS),
}


def _check_cfg(cfg: dict) -> tuple[dict, dict]:
    for where, allowed in _KNOWN.items():
        part = cfg if not where else cfg.get(where, {})
        extra = sorted(k for k, v in part.items() if k not in allowed and v is not None)
        if extra:
            raise PixqueryError(
                f"random_onnx builds plain CLIP ViT/ModifiedResNet models; unsupported {where or 'config'} keys: {extra}"
            )
    vision = {**_VISION_DEFAULTS, **{k: v for k, v in cfg["vision_cfg"].items() if v is not None}}
    text = {**_TEXT_DEFAULTS, **{k: v for k, v in cfg["text_cfg"].items() if v is not None}}
    return vision, text


# -- weights in open_clip's state-dict order -------------------------------------------------------
class _Weights:
    """Draws each parameter from one seeded generator, in the order it is asked for."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.sd: dict[str, np.ndarray] = {}

    def normal(self, key: str, shape, std: float, mean: float = 0.0) -> np.ndarray:
        a = (mean + std * self.rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        self.sd[key] = a
        return a

    def linear(self, key: str, n_out: int, n_in: int, std: float | None = None, bias: bool = True):
        self.normal(f"{key}.weight", (n_out, n_in), std if std is not None else n_in**-0.5)
        if bias:
            self.normal(f"{key}.bias", (n_out,), 0.02)

    def layer_norm(self, key: str, width: int):
        # Not open_clip's ones/zeros: random scale and shift, so the graphs' affine parts are checked too.
        self.normal(f"{key}.weight", (width,), 0.1, mean=1.0)
        self.normal(f"{key}.bias", (width,), 0.1)

    def conv(self, key: str, n_out: int, n_in: int, k: int, std: float | None = None):
        self.normal(key, (n_out, n_in, k, k), std if std is not None else (2.0 / (n_in * k * k)) ** 0.5)

    def batch_norm(self, key: str, width: int):
        self.normal(f"{key}.weight", (width,), 0.1, mean=1.0)
        self.normal(f"{key}.bias", (width,), 0.1)
        self.normal(f"{key}.running_mean", (width,), 0.1)
        self.sd[f"{key}.running_var"] = self.rng.uniform(0.5, 1.5, width).astype(np.float32)
        self.sd[f"{key}.num_batches_tracked"] = np.array(0, np.int64)


def _blocks(w: _Weights, prefix: str, width: int, layers: int, mlp_ratio: float):
    attn_std = width**-0.5
    proj_std = attn_std * (2 * layers) ** -0.5
    fc_std = (2 * width) ** -0.5
    hidden = int(width * mlp_ratio)
    for i in range(layers):
        p = f"{prefix}.resblocks.{i}"
        w.layer_norm(f"{p}.ln_1", width)
        w.normal(f"{p}.attn.in_proj_weight", (3 * width, width), attn_std)
        w.normal(f"{p}.attn.in_proj_bias", (3 * width,), 0.02)
        w.linear(f"{p}.attn.out_proj", width, width, proj_std)
        w.layer_norm(f"{p}.ln_2", width)
        w.linear(f"{p}.mlp.c_fc", hidden, width, fc_std)
        w.linear(f"{p}.mlp.c_proj", width, hidden, proj_std)


def random_weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict for open_clip.CLIP(**cfg) (same names and shapes), seeded and deterministic."""
    vision, text = _check_cfg(cfg)
    embed = int(cfg["embed_dim"])
    w = _Weights(seed)
    tw = text["width"]
    w.normal("positional_embedding", (text["context_length"], tw), 0.01)
    w.normal("text_projection", (tw, embed), tw**-0.5)
    w.sd["logit_scale"] = np.array(np.log(1 / 0.07), np.float32)
    width = vision["width"]
    if isinstance(vision["layers"], (list, tuple)):  # ModifiedResNet
        w.conv("visual.conv1.weight", width // 2, 3, 3)
        w.batch_norm("visual.bn1", width // 2)
        w.conv("visual.conv2.weight", width // 2, width // 2, 3)
        w.batch_norm("visual.bn2", width // 2)
        w.conv("visual.conv3.weight", width, width // 2, 3)
        w.batch_norm("visual.bn3", width)
        inplanes = width
        for li, blocks in enumerate(vision["layers"]):
            planes = width * 2**li
            for b in range(blocks):
                p = f"visual.layer{li + 1}.{b}"
                stride = 2 if li > 0 and b == 0 else 1
                w.conv(f"{p}.conv1.weight", planes, inplanes, 1)
                w.batch_norm(f"{p}.bn1", planes)
                w.conv(f"{p}.conv2.weight", planes, planes, 3)
                w.batch_norm(f"{p}.bn2", planes)
                w.conv(f"{p}.conv3.weight", planes * 4, planes, 1, std=(1.0 / planes) ** 0.5)
                w.batch_norm(f"{p}.bn3", planes * 4)
                if stride > 1 or inplanes != planes * 4:
                    w.conv(f"{p}.downsample.0.weight", planes * 4, inplanes, 1, std=(1.0 / inplanes) ** 0.5)
                    w.batch_norm(f"{p}.downsample.1", planes * 4)
                inplanes = planes * 4
        c = width * 32
        grid = vision["image_size"] // 32
        w.normal("visual.attnpool.positional_embedding", (grid * grid + 1, c), c**-0.5)
        for name in ("k_proj", "q_proj", "v_proj"):
            w.linear(f"visual.attnpool.{name}", c, c, c**-0.5)
        w.linear("visual.attnpool.c_proj", embed, c, c**-0.5)
    else:  # VisionTransformer
        scale = width**-0.5
        patch = vision["patch_size"]
        grid = vision["image_size"] // patch
        w.normal("visual.class_embedding", (width,), scale)
        w.normal("visual.positional_embedding", (grid * grid + 1, width), scale)
        w.normal("visual.proj", (width, embed), scale)
        w.conv("visual.conv1.weight", width, 3, patch, std=(3 * patch * patch) ** -0.5)
        w.layer_norm("visual.ln_pre", width)
        _blocks(w, "visual.transformer", width, vision["layers"], vision["mlp_ratio"])
        w.layer_norm("visual.ln_post", width)
    _blocks(w, "transformer", tw, text["layers"], text["mlp_ratio"])
    w.normal("token_embedding.weight", (text["vocab_size"], tw), 0.02)
    w.layer_norm("ln_final", tw)
    return w.sd


# -- ONNX graphs --------------------------------------------------------------------------------------
class _Graph:
    def __init__(self, sd: dict[str, np.ndarray], quick_gelu: bool):
        self.sd = sd
        self.quick_gelu = quick_gelu
        self.nodes: list = []
        self.inits: dict = {}
        self._n = 0

    def w(self, key: str, transpose: bool = False) -> str:
        """A state-dict tensor as an initializer (named after it), transposed for MatMul if asked."""
        from onnx import numpy_helper

        name = key + (".T" if transpose else "")
        if name not in self.inits:
            a = self.sd[key]
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(a.T if transpose else a), name)
        return name

    def const(self, value, dtype=np.int64) -> str:
        from onnx import numpy_helper

        self._n += 1
        name = f"c{self._n}"
        self.inits[name] = numpy_helper.from_array(np.asarray(value, dtype), name)
        return name

    def op(self, op_type: str, *inputs: str, n_out: int = 1, **attrs):
        from onnx import helper

        self._n += 1
        outs = [f"{op_type.lower()}{self._n}" + (f"_{i}" if n_out > 1 else "") for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"{op_type}_{self._n}", **attrs))
        return outs[0] if n_out == 1 else outs

    # layers
    def linear(self, x: str, key: str, bias: bool = True) -> str:
        y = self.op("MatMul", x, self.w(f"{key}.weight", transpose=True))
        return self.op("Add", y, self.w(f"{key}.bias")) if bias else y

    def layer_norm(self, x: str, key: str) -> str:
        return self.op("LayerNormalization", x, self.w(f"{key}.weight"), self.w(f"{key}.bias"), axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        if self.quick_gelu:  # x * sigmoid(1.702 x)
            return self.op("Mul", x, self.op("Sigmoid", self.op("Mul", x, self.const(1.702, np.float32))))
        # nn.GELU(): 0.5 x (1 + erf(x / sqrt 2)); ONNX's Gelu operator needs opset 20
        erf = self.op("Erf", self.op("Div", x, self.const(np.sqrt(2.0), np.float32)))
        return self.op(
            "Mul", self.op("Mul", x, self.const(0.5, np.float32)), self.op("Add", erf, self.const(1.0, np.float32))
        )

    def attention(self, q: str, k: str, v: str, heads: int, width: int, mask: str | None = None) -> str:
        """Scaled dot-product attention over (B, L, width) projections, `heads` heads -> (B, Lq, width)."""
        d = width // heads
        split = self.const([0, 0, heads, d])
        qh = self.op("Transpose", self.op("Reshape", q, split), perm=[0, 2, 1, 3])  # B H Lq d
        kh = self.op("Transpose", self.op("Reshape", k, split), perm=[0, 2, 3, 1])  # B H d L
        vh = self.op("Transpose", self.op("Reshape", v, split), perm=[0, 2, 1, 3])  # B H L d
        scores = self.op("MatMul", self.op("Mul", qh, self.const(d**-0.5, np.float32)), kh)
        if mask is not None:
            scores = self.op("Add", scores, mask)
        out = self.op("MatMul", self.op("Softmax", scores, axis=-1), vh)
        return self.op("Reshape", self.op("Transpose", out, perm=[0, 2, 1, 3]), self.const([0, 0, width]))

    def block(self, x: str, key: str, width: int, heads: int, mask: str | None = None) -> str:
        """open_clip's ResidualAttentionBlock (nn.MultiheadAttention with packed q/k/v weights)."""
        h = self.layer_norm(x, f"{key}.ln_1")
        qkv = self.linear_packed(h, f"{key}.attn")
        q, k, v = self.op("Split", qkv, self.const([width] * 3), n_out=3, axis=-1)
        a = self.linear(self.attention(q, k, v, heads, width, mask), f"{key}.attn.out_proj")
        x = self.op("Add", x, a)
        h = self.linear(
            self.gelu(self.linear(self.layer_norm(x, f"{key}.ln_2"), f"{key}.mlp.c_fc")), f"{key}.mlp.c_proj"
        )
        return self.op("Add", x, h)

    def linear_packed(self, x: str, key: str) -> str:
        y = self.op("MatMul", x, self.w(f"{key}.in_proj_weight", transpose=True))
        return self.op("Add", y, self.w(f"{key}.in_proj_bias"))

    def conv_bn(self, x: str, conv: str, bn: str, k: int, stride: int = 1, relu: bool = True) -> str:
        pad = k // 2
        y = self.op("Conv", x, self.w(conv), kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        y = self.op(
            "BatchNormalization",
            y,
            self.w(f"{bn}.weight"),
            self.w(f"{bn}.bias"),
            self.w(f"{bn}.running_mean"),
            self.w(f"{bn}.running_var"),
            epsilon=1e-5,
        )
        return self.op("Relu", y) if relu else y

    def avg_pool(self, x: str, k: int) -> str:
        return self.op("AveragePool", x, kernel_shape=[k, k], strides=[k, k])

    def normalize(self, x: str) -> str:
        """F.normalize(x, dim=-1): x / max(||x||, 1e-12)."""
        norm = self.op("ReduceL2", x, axes=[-1], keepdims=1)
        return self.op("Div", x, self.op("Max", norm, self.const(1e-12, np.float32)))

    def model(self, inp, out: str, embed: int, doc: str):
        from onnx import TensorProto, helper

        self.nodes.append(helper.make_node("Identity", [out], ["embedding"], name="embedding"))
        output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", embed])
        graph = helper.make_graph(self.nodes, "main_graph", [inp], [output], initializer=list(self.inits.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pixquery")
        model.ir_version = IR_VERSION
        model.doc_string = doc
        return model


def visual_graph(cfg: dict, sd: dict[str, np.ndarray]):
    """image float (batch, 3, size, size) -> unit-norm embedding (batch, embed_dim)."""
    from onnx import TensorProto, helper

    vision, _ = _check_cfg(cfg)
    size, width, embed = vision["image_size"], vision["width"], int(cfg["embed_dim"])
    g = _Graph(sd, bool(cfg.get("quick_gelu")))
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    if isinstance(vision["layers"], (list, tuple)):  # ModifiedResNet
        x = g.conv_bn("image", "visual.conv1.weight", "visual.bn1", 3, stride=2)
        x = g.conv_bn(x, "visual.conv2.weight", "visual.bn2", 3)
        x = g.conv_bn(x, "visual.conv3.weight", "visual.bn3", 3)
        x = g.avg_pool(x, 2)
        inplanes = width
        for li, blocks in enumerate(vision["layers"]):
            planes = width * 2**li
            for b in range(blocks):
                p = f"visual.layer{li + 1}.{b}"
                stride = 2 if li > 0 and b == 0 else 1
                y = g.conv_bn(x, f"{p}.conv1.weight", f"{p}.bn1", 1)
                y = g.conv_bn(y, f"{p}.conv2.weight", f"{p}.bn2", 3)
                if stride > 1:
                    y = g.avg_pool(y, stride)
                y = g.conv_bn(y, f"{p}.conv3.weight", f"{p}.bn3", 1, relu=False)
                shortcut = x
                if stride > 1 or inplanes != planes * 4:
                    shortcut = g.avg_pool(x, stride) if stride > 1 else x
                    shortcut = g.conv_bn(shortcut, f"{p}.downsample.0.weight", f"{p}.downsample.1", 1, relu=False)
                x = g.op("Relu", g.op("Add", y, shortcut))
                inplanes = planes * 4
        # AttentionPool2d: tokens = [mean, positions...] + positional embedding; the query is the mean token.
        c = width * 32
        heads = width * 32 // vision["head_width"]
        tokens = g.op("Transpose", g.op("Reshape", x, g.const([0, 0, -1])), perm=[0, 2, 1])  # B HW C
        tokens = g.op("Concat", g.op("ReduceMean", tokens, axes=[1], keepdims=1), tokens, axis=1)
        tokens = g.op("Add", tokens, g.w("visual.attnpool.positional_embedding"))
        first = g.op("Slice", tokens, g.const([0]), g.const([1]), g.const([1]))  # B 1 C
        q = g.linear(first, "visual.attnpool.q_proj")
        k = g.linear(tokens, "visual.attnpool.k_proj")
        v = g.linear(tokens, "visual.attnpool.v_proj")
        pooled = g.linear(g.attention(q, k, v, heads, c), "visual.attnpool.c_proj")  # B 1 embed
        out = g.op("Reshape", pooled, g.const([0, -1]))
        doc = "open_clip ModifiedResNet image tower (random weights, written by pixquery.encoders.random_onnx)"
    else:  # VisionTransformer
        patch = vision["patch_size"]
        heads = width // vision["head_width"]
        x = g.op("Conv", "image", g.w("visual.conv1.weight"), kernel_shape=[patch, patch], strides=[patch, patch])
        x = g.op("Transpose", g.op("Reshape", x, g.const([0, 0, -1])), perm=[0, 2, 1])  # B grid² width
        batch = g.op("Shape", "image", start=0, end=1)
        cls_shape = g.op("Concat", batch, g.const([1, width]), axis=0)
        cls = g.op("Expand", g.op("Reshape", g.w("visual.class_embedding"), g.const([1, 1, width])), cls_shape)
        x = g.op("Add", g.op("Concat", cls, x, axis=1), g.w("visual.positional_embedding"))
        x = g.layer_norm(x, "visual.ln_pre")
        for i in range(vision["layers"]):
            x = g.block(x, f"visual.transformer.resblocks.{i}", width, heads)
        x = g.op("Gather", x, g.const(0), axis=1)  # the class token: B width
        out = g.op("MatMul", g.layer_norm(x, "visual.ln_post"), g.w("visual.proj"))
        doc = "open_clip VisionTransformer image tower (random weights, written by pixquery.encoders.random_onnx)"
    return g.model(inp, g.normalize(out), embed, doc)


def textual_graph(cfg: dict, sd: dict[str, np.ndarray]):
    """int32 token ids (batch, context_length) -> unit-norm embedding (batch, embed_dim).

    The positional embedding is an initializer (context, width) and the causal mask a Constant
    (context, context), and no reshape names the context length: the shape pixquery's short-context
    copy (pixquery.encoders.onnx._short_context_graph) knows how to shorten."""
    from onnx import TensorProto, helper, numpy_helper

    _, text = _check_cfg(cfg)
    ctx, width, embed = text["context_length"], text["width"], int(cfg["embed_dim"])
    g = _Graph(sd, bool(cfg.get("quick_gelu")))
    inp = helper.make_tensor_value_info("text", TensorProto.INT32, ["batch", ctx])
    causal = np.triu(np.full((ctx, ctx), -np.inf, np.float32), 1)  # open_clip's build_causal_mask
    g.nodes.append(
        helper.make_node(
            "Constant", [], ["causal_mask"], name="causal_mask", value=numpy_helper.from_array(causal, "causal_mask")
        )
    )
    x = g.op("Gather", g.w("token_embedding.weight"), "text", axis=0)  # B ctx width
    x = g.op("Add", x, g.w("positional_embedding"))
    for i in range(text["layers"]):
        x = g.block(x, f"transformer.resblocks.{i}", width, text["heads"], mask="causal_mask")
    x = g.layer_norm(x, "ln_final")
    eot = g.op("ArgMax", "text", axis=-1, keepdims=1)  # the end token has the highest id: B 1
    x = g.op("GatherND", x, eot, batch_dims=1)  # B width
    out = g.op("MatMul", x, g.w("text_projection"))
    doc = "open_clip CLIP text tower (random weights, written by pixquery.encoders.random_onnx)"
    return g.model(inp, g.normalize(out), embed, doc)


# -- the folder -------------------------------------------------------------------------------------
LAYOUT = (
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_tokenizer_files(textual: Path, context_length: int, bpe_path: str | Path = BPE_VOCAB) -> None:
    """tokenizer.json, special_tokens_map.json and tokenizer_config.json, as `pixquery export` writes them."""
    build_clip_tokenizer(bpe_path).save(str(textual / "tokenizer.json"))
    specials = {
        "bos_token": SOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "pad_token": "!",
    }  # open_clip pads with id 0 = "!"
    _write_json(textual / "special_tokens_map.json", specials)
    _write_json(
        textual / "tokenizer_config.json", {**specials, "model_max_length": context_length, "do_lower_case": True}
    )


def write_random_model(
    cfg: dict, out_dir: str | Path, *, seed: int = 0, save_weights: bool = True, force: bool = False
) -> Path:
    """Write a random-weight model of open_clip config `cfg` into `out_dir` in the immich layout
    (atomically: written beside it, then renamed). `save_weights` adds open_clip_model.safetensors
    and open_clip_config.json (open_clip's `local-dir:` files). Kept as is when complete, unless `force`."""
    import onnx

    out_dir = Path(out_dir)
    if (
        not force
        and all((out_dir / f).is_file() for f in LAYOUT)
        and (not save_weights or (out_dir / "open_clip_model.safetensors").is_file())
    ):
        return out_dir
    vision, text = _check_cfg(cfg)
    if vision["image_size"] != OPENAI_PREPROCESS["size"][0]:
        raise PixqueryError("random_onnx writes 224-pixel models (open_clip's default preprocessing)")
    sd = random_weights(cfg, seed)
    with writing_model_folder(out_dir) as tmp:
        onnx.save(visual_graph(cfg, sd), str(tmp / "visual" / "model.onnx"))
        onnx.save(textual_graph(cfg, sd), str(tmp / "textual" / "model.onnx"))
        # "random_weights": every command that uses this model warns that its rankings mean nothing.
        _write_json(tmp / "config.json", {**cfg, "random_weights": True})
        _write_json(tmp / "visual" / "preprocess_cfg.json", OPENAI_PREPROCESS)
        write_tokenizer_files(tmp / "textual", text["context_length"])
        if save_weights:
            from safetensors.numpy import save_file

            save_file(sd, str(tmp / "open_clip_model.safetensors"))
            _write_json(tmp / "open_clip_config.json", {"model_cfg": cfg, "preprocess_cfg": OPENAI_PREPROCESS})
    return out_dir
