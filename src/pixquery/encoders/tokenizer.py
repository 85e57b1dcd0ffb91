"""CLIP text tokenisation with the `tokenizers` library, giving open_clip's token ids.

open_clip's SimpleTokenizer cleans text in Python (ftfy.fix_text, HTML unescaping twice,
whitespace collapse, lower case) before BPE. A tokenizer.json can only express part of that, so
the cleaning runs here first and the tokenizer.json (ours or immich's) does the BPE. Truncation
keeps the end-of-text token last, as open_clip does ([sot] + first n-2 tokens + [eot]), and
padding uses open_clip's pad id 0, so ids match open_clip exactly.
"""

from __future__ import annotations

import html
import json
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_FTFY: list = []  # [ftfy.fix_text or None], imported on first need (~40 ms: not for plain ASCII)


def _ftfy():
    """open_clip runs ftfy.fix_text; use it when installed for byte-identical ids."""
    if not _FTFY:
        try:
            from ftfy import fix_text
        except ImportError:  # pragma: no cover - exercised through _light_fix_text in the tests
            fix_text = None
        _FTFY.append(fix_text)
    return _FTFY[0]


def _unchanged_by_ftfy(text: str) -> bool:
    """Text ftfy.fix_text returns as it is: printable ASCII without '&' (ftfy's repairs are of
    non-ASCII characters, control characters, terminal escapes and HTML entities; tested on random
    ASCII in tests/test_cold_query.py)."""
    return text.isascii() and text.isprintable() and "&" not in text


def _light_tables() -> dict[int, str]:
    # What ftfy.fix_text changes in ordinary typed text: curly quotes, full-width forms,
    # Latin ligatures, invisible control characters (ftfy's tables, rebuilt from unicodedata).
    table: dict[int, str] = {0x3000: " "}
    for cp in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(cp))
        if alt != chr(cp):
            table[cp] = alt
    for cp in [0x132, 0x133, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4), *range(0xFB00, 0xFB07)]:
        table[cp] = unicodedata.normalize("NFKC", chr(cp))
    table[0xFB05] = "\u017ft"  # ftfy keeps the long s of the "ſt" ligature
    table[0x149] = "'n"  # ŉ, then ftfy uncurls its apostrophe
    for cp in (0x02BC, 0x2018, 0x2019, 0x201A, 0x201B):
        table[cp] = "'"
    for cp in (0x201C, 0x201D, 0x201E, 0x201F):
        table[cp] = '"'
    for cp in [
        *range(0x00, 0x09),
        0x0B,
        *range(0x0E, 0x20),
        0x7F,
        *range(0x206A, 0x2070),
        0xFEFF,
        0xFFF9,
        0xFFFA,
        0xFFFB,
        0xFFFC,
    ]:
        table[cp] = ""
    return table


_LIGHT = _light_tables()


def _light_fix_text(text: str) -> str:
    """Without ftfy: the same result on typed text (ftfy's mojibake repair is not replicated)."""
    return unicodedata.normalize("NFC", text.translate(_LIGHT))


def clean_text(text: str) -> str:
    """open_clip's default 'lower' cleaning."""
    if not _unchanged_by_ftfy(text):
        text = (_ftfy() or _light_fix_text)(text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """tokenizer.json -> (n, context_length) int64 ids, identical to open_clip's tokenizer.

    Plain ASCII text is tokenised by pixquery.encoders.fast_bpe (same ids, without the ~60-100 ms
    of loading `tokenizers` and its JSON); anything else by `tokenizers`, loaded on first need."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        context_length: int = 77,
        pad_id: int = 0,
        *,
        fast: bool | None = None,
        cache_dir: str | Path | None = None,
    ):
        """fast: the pure Python path for ASCII text (default on; $PIXQUERY_FAST_TOKENIZER=0 turns it off)."""
        self.context_length = context_length
        self.pad_id = pad_id
        self.tokenizer_file = Path(tokenizer_file)
        if fast is None:
            fast = os.environ.get("PIXQUERY_FAST_TOKENIZER", "").strip().lower() not in ("0", "false", "no", "off")
        self._use_fast = fast
        self._cache_dir = cache_dir
        self._fast = None  # FastBpe, or False when it does not apply to this tokenizer.json
        self._tok_obj = None

    @property
    def _tok(self):
        if self._tok_obj is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.tokenizer_file))
            # Counts the start/end tokens the post-processor adds, so the end token survives.
            tok.enable_truncation(max_length=self.context_length)
            tok.no_padding()
            self._tok_obj = tok
        return self._tok_obj

    def _fast_ids(self, text: str) -> list[int] | None:
        if not self._use_fast:
            return None
        if self._fast is None:
            from pixquery.encoders.fast_bpe import FastBpe

            self._fast = FastBpe.for_file(self.tokenizer_file, self._cache_dir) or False
        if not self._fast:
            return None
        ids = self._fast.ids(text)
        if ids is None:
            return None
        # as `tokenizers` truncates: the sequence to context - 2, then the start and end tokens
        return [self._fast.sot, *ids[: self.context_length - 2], self._fast.eot]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        cleaned = [clean_text(t) for t in texts]
        rows = [self._fast_ids(t) for t in cleaned]
        slow = [i for i, r in enumerate(rows) if r is None]
        if slow:
            for i, enc in zip(slow, self._tok.encode_batch([cleaned[i] for i in slow])):
                rows[i] = enc.ids
        ids = np.full((len(rows), self.context_length), self.pad_id, dtype=np.int64)
        for row, r in zip(ids, rows):
            row[: len(r)] = r
        return ids


def pad_id_for(text_cfg: dict, textual_dir: Path) -> int:
    """open_clip pads its own CLIP tokenizer with 0; models with an HF tokenizer use its pad token."""
    if "hf_tokenizer_name" not in text_cfg:
        return int(text_cfg.get("pad_id", 0))
    cfg_file = textual_dir / "tokenizer_config.json"
    pad = json.loads(cfg_file.read_text(encoding="utf-8")).get("pad_token") if cfg_file.exists() else None
    if isinstance(pad, dict):
        pad = pad.get("content")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(textual_dir / "tokenizer.json"))
    return tok.token_to_id(pad) if pad is not None and tok.token_to_id(pad) is not None else 0


# -- models with a Hugging Face tokenizer (SigLIP, SigLIP 2, XLM-RoBERTa, NLLB) -------------------------
def _basic_clean(text: str) -> str:
    """open_clip's basic_clean: ftfy, HTML unescaped twice, stripped."""
    if not _unchanged_by_ftfy(text):
        text = (_ftfy() or _light_fix_text)(text)
    return html.unescape(html.unescape(text)).strip()


def _canonicalize(text: str) -> str:
    """open_clip's canonicalize_text (big_vision's): punctuation removed, lower case, one space."""
    import string

    text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
    return " ".join(text.split()).strip()


# open_clip's tokenizer_kwargs "clean" values -> the same function
CLEANERS = {
    "canonicalize": lambda t: _canonicalize(_basic_clean(t)),
    "lower": lambda t: " ".join(_basic_clean(t).split()).strip().lower(),
    "whitespace": lambda t: " ".join(_basic_clean(t).split()).strip(),
}


class HfTokenizer:
    """tokenizer.json of a Hugging Face tokenizer -> (n, context_length) int64 ids, as open_clip's
    HFTokenizer gives them (clean, then `tokenizer(texts, max_length=context_length,
    padding="max_length", truncation=True)`), with the `tokenizers` library only: no transformers.
    The special tokens (SigLIP's </s>, Gemma's <bos>, XLM-R's <s> ... </s>) come from the
    post-processor inside tokenizer.json, the pad token and sides from tokenizer_config.json."""

    def __init__(
        self, textual_dir: str | Path, context_length: int, *, clean: str = "whitespace", strip_sep_token: bool = False
    ):
        if clean not in CLEANERS:
            raise ValueError(f"unknown tokenizer clean mode {clean!r}; known: {', '.join(CLEANERS)}")
        self.textual_dir = Path(textual_dir)
        self.context_length = context_length
        self.clean = CLEANERS[clean]
        self.strip_sep_token = strip_sep_token
        self._tok_obj = None
        self.pad_id = 0
        self.sep_id = None

    @property
    def _tok(self):
        if self._tok_obj is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.textual_dir / "tokenizer.json"))
            cfg_file = self.textual_dir / "tokenizer_config.json"
            cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}

            def token_of(key):
                value = cfg.get(key)
                return value.get("content") if isinstance(value, dict) else value

            pad = token_of("pad_token")
            self.pad_id = tok.token_to_id(pad) if pad is not None and tok.token_to_id(pad) is not None else 0
            sep = token_of("sep_token")
            self.sep_id = tok.token_to_id(sep) if sep is not None else None
            tok.enable_truncation(max_length=self.context_length, direction=cfg.get("truncation_side", "right"))
            tok.enable_padding(
                length=self.context_length,
                pad_id=self.pad_id,
                pad_token=pad or "",
                direction=cfg.get("padding_side", "right"),
            )
            self._tok_obj = tok
        return self._tok_obj

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tok.encode_batch([self.clean(t) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)
        if self.strip_sep_token and self.sep_id is not None:
            ids[ids == self.sep_id] = 0  # as open_clip's strip_sep_token
        return ids


def tokenizer_for(textual_dir: Path, text_cfg: dict, context_length: int, cache_dir=None):
    """The tokenizer a model folder's text tower was trained with: open_clip's CLIP BPE (ClipTokenizer)
    unless its config names a Hugging Face tokenizer (hf_tokenizer_name), with open_clip's
    tokenizer_kwargs (clean mode, strip_sep_token)."""
    if "hf_tokenizer_name" not in text_cfg:
        return ClipTokenizer(
            textual_dir / "tokenizer.json", context_length, pad_id_for(text_cfg, textual_dir), cache_dir=cache_dir
        )
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    return HfTokenizer(
        textual_dir,
        context_length,
        clean=kwargs.get("clean", "whitespace"),
        strip_sep_token=bool(kwargs.get("strip_sep_token", False)),
    )
