"""CLIP's BPE for plain ASCII queries in pure Python, from a compact copy of tokenizer.json.

`tokenizers.Tokenizer.from_file` takes ~60-100 ms on this 2-core machine (a 3.6 MB JSON, 49k
tokens, 49k merges): the largest single cost of a one-shot `pixquery search`. This module reads
the same vocabulary and merges from a compact copy (a marshal of sorted lists, ~5 ms to load,
made once, beside tokenizer.json or in the cache folder) and tokenises text that, after
pixquery's cleaning, is printable ASCII. On such text every step of CLIP's tokenizer.json is
simple: NFC, whitespace and lower case change nothing (the cleaning did them), the split regex's
\\p{L} and \\p{N} are [a-zA-Z] and [0-9], byte-level mapping is the identity, and BPE is open_clip's
loop. Anything else (non-ASCII text, a special token's text in the query, a tokenizer.json of
another layout, a token missing from the vocabulary) goes to `tokenizers` as before. Tests compare
the ids with `tokenizers` on thousands of strings (tests/test_cold_query.py).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import re
import sys
from bisect import bisect_left
from pathlib import Path

FORMAT = 2
# The split patterns this knows (pixquery's tokenizer.json, Hugging Face's CLIP tokenizer.json),
# each as Rust regex in the file; for ASCII text \p{L} = [a-zA-Z] and \p{N} = [0-9].
KNOWN_SPLITS = {
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
}


def _layout(d: dict) -> dict | None:
    """What the fast path needs from a parsed tokenizer.json, or None when its layout is not CLIP's."""
    try:
        norm = d.get("normalizer") or {}
        steps = (
            [n.get("type") for n in norm.get("normalizers", [])]
            if norm.get("type") == "Sequence"
            else [norm.get("type")]
        )
        if steps != ["NFC", "Replace", "Lowercase"]:
            return None
        pre = d["pre_tokenizer"]
        if pre.get("type") != "Sequence" or len(pre["pretokenizers"]) != 2:
            return None
        split, byte_level = pre["pretokenizers"]
        if (
            split.get("type") != "Split"
            or split.get("behavior") != "Removed"
            or split.get("invert") is not True
            or split.get("pattern", {}).get("Regex") not in KNOWN_SPLITS
        ):
            return None
        if byte_level.get("type") != "ByteLevel" or byte_level.get("add_prefix_space") or byte_level.get("use_regex"):
            return None
        model = d["model"]
        if (
            model.get("type") != "BPE"
            or model.get("dropout") is not None
            or model.get("end_of_word_suffix") != "</w>"
            or model.get("continuing_subword_prefix") not in (None, "")
            or model.get("byte_fallback")
            or model.get("ignore_merges")
        ):
            return None
        post = d["post_processor"]
        if post.get("type") == "TemplateProcessing":
            single = post["single"]
            if len(single) != 3 or "Sequence" not in single[1]:
                return None
            first, last = single[0]["SpecialToken"]["id"], single[2]["SpecialToken"]["id"]
            specials = post["special_tokens"]
            sot, eot = specials[first]["ids"], specials[last]["ids"]
            if len(sot) != 1 or len(eot) != 1:
                return None
            sot, eot = sot[0], eot[0]
        elif post.get("type") == "RobertaProcessing":
            sot, eot = post["cls"][1], post["sep"][1]
        else:
            return None
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        if any(m.count(" ") != 1 for m in merges):
            return None
        vocab = model["vocab"]
        return {
            "tokens": list(vocab),
            "ids": [int(i) for i in vocab.values()],
            "merges": merges,
            "sot": int(sot),
            "eot": int(eot),
            "added": [t["content"] for t in d.get("added_tokens", [])],
            "split": split["pattern"]["Regex"],
        }
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        return None


class _SortedMap:
    """A read-only str -> int map over two sorted lists (binary search): nothing to build when it
    is loaded, where a dict of ~49k entries takes ~8 ms; a query looks up a few hundred keys."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: list, values: list):
        self.keys, self.values = keys, values

    @classmethod
    def of(cls, pairs) -> _SortedMap:
        items = sorted(pairs)
        return cls([k for k, _ in items], [v for _, v in items])

    def get(self, key: str):
        i = bisect_left(self.keys, key)
        return self.values[i] if i < len(self.keys) and self.keys[i] == key else None


def _paths(tokenizer_json: Path, cache_dir) -> list[Path]:
    from pixquery.encoders.onnx import file_fingerprint
    from pixquery.encoders.quantize import default_cache_dir

    fp = file_fingerprint([tokenizer_json], extra=f"fast-bpe{FORMAT}-py{sys.version_info[0]}.{sys.version_info[1]}")
    name = f"tokenizer.{fp}.bpe"
    return [
        tokenizer_json.with_name(name),
        Path(cache_dir or default_cache_dir()) / f"{tokenizer_json.parent.parent.name}-{name}",
    ]


def _load(path: Path) -> dict | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head, _, body = blob.partition(b"\n")
    try:
        header = json.loads(head)
        if header.get("format") != FORMAT or hashlib.sha256(body).hexdigest() != header.get("sha256"):
            return None
        data = marshal.loads(body)
        if data is None:  # the layout is not one this knows (checked once)
            return {"none": True}
        maps = {}
        for name in ("vocab", "ranks"):
            keys, values = data[name]
            if not (isinstance(keys, list) and isinstance(values, list) and len(keys) == len(values)):
                return None
            maps[name] = _SortedMap(keys, values)
        return {
            **maps,
            "sot": int(data["sot"]),
            "eot": int(data["eot"]),
            "added": [str(a) for a in data["added"]],
            "split": str(data["split"]),
        }
    except (ValueError, EOFError, TypeError, KeyError):
        return None


def _compact(layout: dict | None) -> dict | None:
    """What the copy holds: both maps as sorted key and value lists (see _SortedMap)."""
    if layout is None:
        return None
    vocab = _SortedMap.of(zip(layout["tokens"], layout["ids"]))
    ranks = _SortedMap.of((m, r) for r, m in enumerate(layout["merges"]))
    return {
        "vocab": [vocab.keys, vocab.values],
        "ranks": [ranks.keys, ranks.values],
        **{k: layout[k] for k in ("sot", "eot", "added", "split")},
    }


def _write(path: Path, data: dict | None) -> bool:
    body = marshal.dumps(data)
    header = {"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(json.dumps(header).encode() + b"\n" + body)
        os.replace(tmp, path)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


class FastBpe:
    """tokenize(cleaned_text) -> ids (without padding or truncation), or None: not for this text."""

    def __init__(self, data: dict):
        self.vocab, self.ranks = data["vocab"], data["ranks"]
        self.sot, self.eot, self.added = data["sot"], data["eot"], data["added"]
        self.split = re.compile(data["split"].replace(r"\p{L}", "a-zA-Z").replace(r"\p{N}", "0-9"), re.ASCII)
        self.cache: dict[str, list[str]] = {}

    @classmethod
    def for_file(cls, tokenizer_json: str | Path, cache_dir=None) -> FastBpe | None:
        """From the compact copy of `tokenizer_json` (made now if missing or damaged), or None
        when its layout is not one this knows."""
        tokenizer_json = Path(tokenizer_json)
        paths = _paths(tokenizer_json, cache_dir)
        for path in paths:
            data = _load(path)
            if data is not None:
                return None if data.get("none") else cls(data)
        try:
            with open(tokenizer_json, encoding="utf-8") as f:
                layout = _layout(json.load(f))
        except (OSError, ValueError):
            return None
        data = _compact(layout)
        for path in paths:
            if _write(path, data):
                break
        if data is None:
            return None
        return cls({**data, "vocab": _SortedMap(*data["vocab"]), "ranks": _SortedMap(*data["ranks"])})

    def _bpe(self, piece: str) -> list[str]:
        """open_clip's merge loop: the lowest-ranked adjacent pair first, every occurrence of it."""
        word = list(piece[:-1]) + [piece[-1] + "</w>"]
        ranks = self.ranks
        while len(word) > 1:
            best, best_rank = None, None
            for a, b in zip(word, word[1:]):
                r = ranks.get(f"{a} {b}")
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = (a, b), r
            if best is None:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def ids(self, text: str) -> list[int] | None:
        if not (text.isascii() and text.isprintable()) or any(a in text for a in self.added):
            return None
        out: list[int] = []
        for piece in self.split.findall(text):
            symbols = self.cache.get(piece)
            if symbols is None:
                symbols = self.cache[piece] = self._bpe(piece)
            for s in symbols:
                i = self.vocab.get(s)
                if i is None:
                    return None
                out.append(i)
        return out
