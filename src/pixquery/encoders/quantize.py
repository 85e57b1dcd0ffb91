"""int8 copies of ONNX towers with ONNX Runtime's dynamic quantisation, made once and cached.

Only MatMul and Gemm are quantised: that is where ViTs and the text towers spend their time, and
quantised convolutions ran 3x slower than fp32 on this CPU (ResNet stems). The copy lives next to
the model (`model.int8.<fingerprint>.onnx`) or, if that folder is read-only, in the cache folder;
the source's fingerprint in the name keeps a re-exported model from meeting a stale copy.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pixquery.errors import PixqueryError

OP_TYPES = ["MatMul", "Gemm"]


class _QuietAdvice(logging.Filter):
    # quantize_dynamic logs "Please consider to run pre-processing" on the root logger every time.
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pixquery" / "int8"


def quantized_copy(model_path: Path, cache_dir: str | Path | None = None, stem: str | None = None) -> Path:
    """stem: the copy's name before `.int8.` (default: the source's); the short-context text
    tower (model.ctx.<fp>.onnx) keeps the tower's name, model.int8.<fp of its source>.onnx."""
    from pixquery.encoders.onnx import derived_copy_paths

    beside, cached = derived_copy_paths(model_path, "int8", cache_dir, stem)
    for candidate in (beside, cached):
        if candidate.is_file():
            return candidate
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise PixqueryError(
            f"precision='int8' needs the onnx package ({e.name} is missing): pip install onnx"
        ) from None
    for target in (beside, cached):
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            quiet = _QuietAdvice()
            logging.getLogger().addFilter(quiet)
            try:
                quantize_dynamic(str(model_path), str(tmp), op_types_to_quantize=OP_TYPES, weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().removeFilter(quiet)
            os.replace(tmp, target)  # atomic: a reader never sees half a model
            return target
        except PermissionError:
            continue  # read-only model folder: fall through to the cache folder
        except OSError as e:
            if target is cached:
                raise PixqueryError(f"cannot write the int8 copy of {model_path} to {target}: {e}") from None
        finally:
            tmp.unlink(missing_ok=True)
    raise PixqueryError(
        f"cannot write the int8 copy of {model_path}: {beside.parent} and {cached.parent} are read-only"
    )
