"""Tiny random-weight models of every family pixquery knows by name (beyond OpenAI CLIP), for the
torch-marked tests: open_clip's own architectures (SigLIP's and SigLIP 2's timm ViT with a MAP
head and last-token text tower, MobileCLIP2's FastViT-MCi0, XLM-RoBERTa and NLLB text towers from
transformers) at small widths, exported by `pixquery.encoders.export` into the immich layout.

Real tokenizer vocabularies cannot be downloaded here, so each family gets a small tokenizer of the
same kind (a Unigram model with the family's special tokens and post-processor) trained on a local
multilingual corpus. The same tokenizer files are used on both sides of every equivalence test:
open_clip's HFTokenizer (transformers) and pixquery's HfTokenizer (`tokenizers` only).

    from tiny_families import family_model
    folder = family_model("siglip2")     # models/tiny-families/siglip2, made once (a lock for workers)
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "tiny-families"

# Multilingual strings: the equivalence corpus (tokens) and the tokenizers' training text.
CORPUS = [
    "a photo of a dog",
    "A Photo Of A DOG!!!",
    "",
    "   ",
    "ein Hund spielt im Schnee",  # German
    "Straße in München, schöne Grüße",
    "café crème brûlée naïve",
    "一只狗在雪地里玩耍",  # Chinese
    "東京タワーの夜景",  # Japanese
    "강아지가 눈 속에서 놀고 있다",  # Korean
    "كلب يلعب في الثلج",  # Arabic
    "Привет мир, собака на пляже",
    "🐶🐱 emoji 🚀 party 🎉",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ１２３",
    "Tom &amp; Jerry &lt;3",
    "tab\tnew\nline  multiple   spaces",
    "e\u0301 combining accent, zero\u200bwidth",
    "under_score, hyphen-ated; punctuation: (yes)!",
    "İstanbul ΣΊΣΥΦΟΣ Ὀδυσσεύς नमस्ते",
    " ".join(["word"] * 100),  # longer than any context: truncated
    "Ein sehr langer deutscher Satz über einen Hund, der am Strand spielt, " * 4,  # 200+ characters
    "长城是中国古代的军事防御工程，" * 12,  # 200+ CJK characters
]
QUERIES = {"de": "ein roter Sportwagen am Strand", "zh": "海滩上的红色跑车", "ar": "سيارة رياضية حمراء على الشاطئ"}

_TRAIN = (
    CORPUS * 3
    + [
        "the quick brown fox jumps over the lazy dog",
        "a cat sleeping on a sofa",
        "sunset over the mountains",
        "der schnelle braune Fuchs springt über den faulen Hund",
        "猫在沙发上睡觉",
        "山上的日落",
        "قطة نائمة على الأريكة",
        "غروب الشمس فوق الجبال",
        "le chat dort sur le canapé",
        "el perro corre en la playa",
    ]
    * 5
)

TEXT_TINY = {"width": 64, "heads": 2, "layers": 2}


def _train_tokenizer(specials: list[str], template: str, vocab: int = 400):
    """A Unigram tokenizer (SentencePiece's kind, as SigLIP's, Gemma's, XLM-R's, NLLB's) with
    `specials` at ids 0.. and the post-processor `template` (e.g. "$A </s>")."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    unk = next(s for s in specials if "unk" in s)
    trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=specials, unk_token=unk)
    tok.train_from_iterator(_TRAIN, trainer)
    used = [t for t in template.split() if not t.startswith("$")]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tok.token_to_id(t)) for t in used]
    )
    return tok


def _write_tokenizer(folder: Path, tok, context: int, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context, "padding_side": "right", **config}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({k: v for k, v in config.items() if k.endswith("_token")})
    )
    return folder


def _register_timm_tiny():
    """Small ViTs of SigLIP's kind (no class token, MAP head) under names open_clip's timm tower can
    build; timm's own fastvit_mci0 (MobileCLIP2-S0's) is small already."""
    from timm.models import register_model
    from timm.models._registry import is_model
    from timm.models.vision_transformer import _create_vision_transformer

    def make(name, variant, patch, size):
        if is_model(name):
            return

        def fn(pretrained=False, **kwargs):
            args = dict(
                patch_size=patch,
                embed_dim=64,
                depth=2,
                num_heads=2,
                class_token=False,
                global_pool="map",
                img_size=size,
            )
            return _create_vision_transformer(variant, pretrained=False, **dict(args, **kwargs))

        fn.__name__ = name
        register_model(fn)

    make("pq_tiny_siglip_224", "vit_base_patch16_siglip_224", 16, 224)
    make("pq_tiny_siglip_256_p32", "vit_base_patch32_siglip_256", 32, 256)
    make("pq_tiny_siglip_384", "vit_base_patch16_siglip_384", 32, 384)


def _siglip_text(vocab: int, tanh: bool) -> dict:
    cfg = {
        "context_length": 64,
        "vocab_size": vocab,
        **TEXT_TINY,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
    }
    if tanh:
        cfg["act_kwargs"] = {"approximate": "tanh"}
    return cfg


def _family(kind: str, work: Path) -> tuple[dict, Path | None, str, str]:
    """(open_clip model config, tokenizer folder or None for CLIP's BPE, arch for the preprocessing
    tag, the tag) of the tiny `kind`."""
    if kind == "siglip":
        tok = _train_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>")
        tdir = _write_tokenizer(work / "tok", tok, 64, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
        cfg = {
            "embed_dim": 48,
            "init_logit_bias": -10,
            "custom_text": True,
            "vision_cfg": {
                "image_size": 224,
                "timm_model_name": "pq_tiny_siglip_224",
                "timm_model_pretrained": False,
                "timm_pool": "map",
                "timm_proj": "linear",
            },
            "text_cfg": {
                **_siglip_text(tok.get_vocab_size(), False),
                "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                "tokenizer_kwargs": {"clean": "canonicalize"},
            },
        }
        return cfg, tdir, "ViT-B-16-SigLIP", "webli"
    if kind == "siglip2":
        tok = _train_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos> $A <eos>")
        tdir = _write_tokenizer(
            work / "tok", tok, 64, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
        )
        cfg = {
            "embed_dim": 48,
            "init_logit_bias": -10,
            "custom_text": True,
            "vision_cfg": {
                "image_size": 256,
                "timm_model_name": "pq_tiny_siglip_256_p32",
                "timm_model_pretrained": False,
                "timm_pool": "map",
                "timm_proj": "linear",
            },
            "text_cfg": {
                **_siglip_text(tok.get_vocab_size(), True),
                "hf_tokenizer_name": "timm/ViT-B-32-SigLIP2-256",
                "tokenizer_kwargs": {"clean": "canonicalize"},
            },
        }
        return cfg, tdir, "ViT-B-32-SigLIP2-256", "webli"
    if kind in ("xlmr", "nllb"):
        from transformers import M2M100Config, XLMRobertaConfig

        if kind == "xlmr":
            tok = _train_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>")
            tdir = _write_tokenizer(
                work / "tok",
                tok,
                77,
                pad_token="<pad>",
                bos_token="<s>",
                eos_token="</s>",
                unk_token="<unk>",
                cls_token="<s>",
                sep_token="</s>",
            )
            hf = XLMRobertaConfig(
                vocab_size=tok.get_vocab_size(),
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=80,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                type_vocab_size=1,
            )
            text = {
                "hf_model_name": str(work / "hf"),
                "hf_tokenizer_name": "xlm-roberta-base",
                "hf_pooler_type": "mean_pooler",
            }
            vision = {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32}
            arch, tag = "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"
        else:
            tok = _train_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "eng_Latn"], "eng_Latn $A </s>")
            tdir = _write_tokenizer(
                work / "tok", tok, 77, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
            )
            hf = M2M100Config(
                vocab_size=tok.get_vocab_size(),
                d_model=32,
                encoder_layers=2,
                decoder_layers=1,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                max_position_embeddings=128,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                scale_embedding=True,
            )
            text = {
                "hf_model_name": str(work / "hf"),
                "hf_tokenizer_name": "facebook/nllb-200-distilled-600M",
                "hf_proj_type": "linear",
                "hf_pooler_type": "cls_pooler",
            }
            vision = {
                "image_size": 384,
                "timm_model_name": "pq_tiny_siglip_384",
                "timm_model_pretrained": False,
                "timm_pool": "map",
                "timm_proj": "linear",
            }
            arch, tag = "nllb-clip-base-siglip", "v1"
        hf._attn_implementation = "eager"  # traced once for ONNX: no shape-dependent kernel choice
        hf.save_pretrained(str(work / "hf"))
        cfg = {"embed_dim": 48, "custom_text": True, "vision_cfg": vision, "text_cfg": text}
        if kind == "nllb":
            cfg["init_logit_bias"] = -10
        return cfg, tdir, arch, tag
    if kind == "mobileclip2":
        cfg = {
            "embed_dim": 48,
            "custom_text": True,
            "vision_cfg": {
                "timm_model_name": "fastvit_mci0",
                "timm_model_pretrained": False,
                "timm_pool": "avg",
                "timm_proj": "linear",
                "timm_drop": 0.0,
                "timm_drop_path": 0.0,
                "image_size": 256,
            },
            "text_cfg": {"context_length": 77, "vocab_size": 49408, **TEXT_TINY, "no_causal_mask": True},
        }
        return cfg, None, "MobileCLIP2-S0", "dfndr2b"
    if kind == "datacomp":  # open_clip's ViT-B/32 config (GELU, not OpenAI's QuickGELU), tiny
        cfg = {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, **TEXT_TINY},
        }
        return cfg, None, "ViT-B-32", "datacomp_xl_s13b_b90k"
    raise KeyError(kind)


FAMILIES = ("siglip", "siglip2", "xlmr", "nllb", "mobileclip2", "datacomp")
MULTILINGUAL = ("siglip2", "xlmr", "nllb")
# the registry name each tiny family stands for
REGISTRY_NAME = {
    "siglip": "ViT-B-16-SigLIP",
    "siglip2": "ViT-B-32-SigLIP2-256",
    "xlmr": "XLM-Roberta-Base-ViT-B-32",
    "nllb": "nllb-clip-base-siglip",
    "mobileclip2": "MobileCLIP2-S0",
    "datacomp": "ViT-B-32-datacomp",
}


def family_model(kind: str) -> Path:
    """models/tiny-families/<kind>: the tiny model exported with pixquery's exporter (torch needed),
    with open_clip's local-dir files beside it. Made once; parallel workers wait on a lock."""
    folder = OUT / kind / "model"
    if (folder / "open_clip_model.safetensors").is_file():
        _register_timm_tiny()
        return folder
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _register_timm_tiny()
        if not (folder / "open_clip_model.safetensors").is_file():
            from pixquery.encoders.export import export_open_clip

            cfg, tdir, arch, tag = _family(kind, OUT / kind)
            export_open_clip(
                arch,
                None,
                folder,
                model_cfg=cfg,
                save_torch=True,
                force=True,
                tokenizer_dir=tdir,
                preprocess_from=tag,
                registry_name=REGISTRY_NAME[kind],
            )
    return folder
