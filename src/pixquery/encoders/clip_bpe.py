"""open_clip's CLIP BPE tokenizer as a `tokenizers` tokenizer.json, without torch or open_clip.

The vocabulary is OpenAI's bpe_simple_vocab_16e6.txt.gz (MIT, see pixquery/data/), the file
open_clip ships; `pixquery export` passes open_clip's own copy, the torch-free test-model writer
(pixquery.encoders.random_onnx) the copy shipped here. Same file, same tokenizer.json.
"""

from __future__ import annotations

import gzip
from pathlib import Path

SOT, EOT = "<start_of_text>", "<end_of_text>"  # open_clip's names for ids 49406 / 49407
BPE_VOCAB = Path(__file__).resolve().parent.parent / "data" / "bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map of the 256 bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_clip_tokenizer(bpe_path: str | Path = BPE_VOCAB):
    """open_clip's SimpleTokenizer as a `tokenizers` Tokenizer: same vocabulary order, same merges,
    same pre-tokenisation regex. Text cleaning (ftfy, lower case) runs in pixquery.encoders.tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]  # as SimpleTokenizer
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token=EOT))
    # Also stands alone (without our Python cleaning) for everyday text, like HF's CLIP tokenizer.json.
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pattern = rf"{SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+"
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])]
    )
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.add_special_tokens([AddedToken(SOT, special=True), AddedToken(EOT, special=True)])
    return tok
