"""One typed settings tree (model, index, ingest), read from a TOML file and overridden by flags.

[model]
name = "ViT-B-32"          # or a local model folder
precision = "int8"         # or "fp32"; unset: the library's (fp32 for a new one)
[index]
kind = "hnsw"
M = 32
ef_construction = 200
[ingest]
batch_size = 32
workers = 2                # decoder processes (default: one per core)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from pixquery.errors import PixqueryError

if sys.version_info >= (3, 11):
    import tomllib
else:  # requires-python is 3.10: tomli is the same parser, before it joined the standard library
    import tomli as tomllib


@dataclass
class ModelSettings:
    name: str | None = None
    precision: str | None = None  # None: the library's remembered precision (fp32 for a new one)


@dataclass
class IndexSettings:
    kind: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class IngestSettings:
    batch_size: int | None = None  # None: the encoder's preferred size (32 on CPU, 256 on CUDA)
    workers: int | None = None
    draft: bool = True


@dataclass
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)

    @classmethod
    def load(cls, path: str | Path | None) -> Settings:
        settings = cls()
        if path is None:
            return settings
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise PixqueryError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise PixqueryError(f"{path}: not valid TOML: {e}") from None
        unknown = set(data) - {"model", "index", "ingest"}
        if unknown:
            raise PixqueryError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; known: model, index, ingest")
        try:
            settings.model = ModelSettings(**data.get("model", {}))
            ingest = dict(data.get("ingest", {}))
            settings.ingest = IngestSettings(**ingest)
        except TypeError as e:
            raise PixqueryError(f"{path}: {e}") from None
        index = dict(data.get("index", {}))
        settings.index = IndexSettings(kind=index.pop("kind", None), params=index)
        return settings
