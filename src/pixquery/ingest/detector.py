"""Object detector plug-ins: boxes in a photo or frame, whose crops pixquery then embeds.

Any object with `detect(image) -> list[DetectedBox]` is a Detector. `OnnxDetector` runs an ONNX
model given by path (no weights ship with pixquery and none are downloaded); it expects:

  input   one image tensor, NCHW (1, 3, H, W), RGB. float inputs get values in [0, 1]; uint8
          inputs get 0..255. H and W come from the model's input shape; where they are symbolic,
          from `input_size` (default 640x640). The picture is resized to W x H without keeping its
          aspect ratio (so relative coordinates are the same in the picture and the input).
  outputs found by name, else by position:
          boxes   (N, 4) or (1, N, 4): x0, y0, x1, y1, relative (0..1). Pixel coordinates of
                  the model input are accepted too (any value above 1.5 means pixels).
          scores  (N,) or (1, N): confidence; or (N, C) / (1, N, C) class scores, whose max is
                  the score and argmax the label.
          labels  optional, (N,) or (1, N) integer class ids.
          Names recognised: boxes|bboxes|detection_boxes, scores|confidences|detection_scores,
          labels|classes|class_ids|detection_classes.
  labels  class ids become names through `labels` (a list, or a text file with one name a
          line); `<model>.labels.txt` or `labels.txt` beside the model is used when present.

Exported detectors with non-maximum suppression built in (torchvision's, YOLO exported with NMS,
TF Object Detection API models) fit this directly; a raw YOLO head (1, 84, 8400) needs its
decoding and NMS exported with it first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from pixquery.errors import PixqueryError


@dataclass(frozen=True)
class DetectedBox:
    box: tuple[float, float, float, float]  # relative x0, y0, x1, y1
    score: float
    label: str | None = None


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: Image.Image) -> list[DetectedBox]:
        """Boxes of objects in an RGB picture, relative coordinates, any order."""
        ...


_BOX_NAMES = ("boxes", "bboxes", "detection_boxes", "box")
_SCORE_NAMES = ("scores", "confidences", "detection_scores", "score", "conf")
_LABEL_NAMES = ("labels", "classes", "class_ids", "detection_classes", "label")


class OnnxDetector:
    """An ONNX object detector (see the module docstring for the input/output convention)."""

    def __init__(
        self,
        path: str | Path,
        *,
        labels: Sequence[str] | str | Path | None = None,
        input_size: tuple[int, int] = (640, 640),
        threads: int | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - onnxruntime is a core dependency
            raise PixqueryError("the ONNX detector needs onnxruntime: pip install onnxruntime") from e
        self.path = Path(path)
        if not self.path.is_file():
            raise PixqueryError(f"detector model not found: {self.path}")
        self.name = self.path.stem
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise PixqueryError(f"{self.path}: not a usable ONNX model ({e})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.uint8 = "uint8" in inp.type
        shape = list(inp.shape)
        if len(shape) != 4:
            raise PixqueryError(f"{self.path}: the detector's input must be NCHW (1, 3, H, W), not {shape}")
        h, w = shape[2], shape[3]
        self.size = (
            w if isinstance(w, int) and w > 0 else input_size[0],
            h if isinstance(h, int) and h > 0 else input_size[1],
        )
        self.outputs = self._map_outputs([o.name for o in self.session.get_outputs()])
        self.labels = _load_labels(labels, self.path)

    def _map_outputs(self, names: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for role, options in (("boxes", _BOX_NAMES), ("scores", _SCORE_NAMES), ("labels", _LABEL_NAMES)):
            hit = next((n for n in names if n.lower() in options), None)
            if hit:
                found[role] = hit
        rest = [n for n in names if n not in found.values()]
        for role in ("boxes", "scores", "labels"):
            if role not in found and rest:
                found[role] = rest.pop(0)
        if "boxes" not in found or "scores" not in found:
            raise PixqueryError(f"{self.path}: a detector needs at least two outputs (boxes, scores); it has {names}")
        return found

    def detect(self, image: Image.Image) -> list[DetectedBox]:
        x = np.asarray(image.convert("RGB").resize(self.size, Image.Resampling.BILINEAR), dtype=np.uint8)
        x = x.transpose(2, 0, 1)[None]
        x = np.ascontiguousarray(x if self.uint8 else x.astype(np.float32) / 255.0)
        roles = list(self.outputs)
        values = dict(zip(roles, self.session.run([self.outputs[r] for r in roles], {self.input_name: x})))
        boxes = np.asarray(values["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(values["scores"], dtype=np.float64)
        class_ids = None
        if scores.ndim >= 2 and scores.shape[-1] > 1 and scores.size != len(boxes):
            scores = scores.reshape(-1, scores.shape[-1])
            class_ids = scores.argmax(1)
            scores = scores.max(1)
        scores = scores.reshape(-1)
        if "labels" in values:
            class_ids = np.asarray(values["labels"]).reshape(-1).astype(np.int64)
        if len(scores) != len(boxes):
            raise PixqueryError(f"{self.path}: {len(boxes)} boxes but {len(scores)} scores")
        if len(boxes) and boxes.max() > 1.5:  # pixel coordinates of the model input
            boxes = boxes / np.array([self.size[0], self.size[1], self.size[0], self.size[1]], dtype=np.float64)
        out = []
        for i, (b, s) in enumerate(zip(np.clip(boxes, 0.0, 1.0), scores)):
            x0, y0, x1, y1 = min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])
            if x1 - x0 < 1e-3 or y1 - y0 < 1e-3 or not np.isfinite(s):
                continue
            label = None
            if class_ids is not None and i < len(class_ids):
                cid = int(class_ids[i])
                label = self.labels[cid] if self.labels and 0 <= cid < len(self.labels) else str(cid)
            out.append(DetectedBox((float(x0), float(y0), float(x1), float(y1)), float(s), label))
        return out


def _load_labels(labels, model_path: Path) -> list[str] | None:
    if labels is None:
        for cand in (model_path.with_suffix(".labels.txt"), model_path.parent / "labels.txt"):
            if cand.is_file():
                labels = cand
                break
    if labels is None:
        return None
    if isinstance(labels, (str, Path)):
        return [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
    return list(labels)


def load_detector(spec: str | Path, **kwargs) -> Detector:
    """A Detector from a path (`model.onnx`, or `onnx:/path/model.onnx`)."""
    text = str(spec)
    if text.startswith("onnx:"):
        text = text[5:]
    text = os.path.expanduser(text)
    if not text.lower().endswith(".onnx"):
        raise PixqueryError(f"unknown detector {spec!r}: give the path of an .onnx object detector")
    return OnnxDetector(text, **kwargs)


__all__ = ["DetectedBox", "Detector", "OnnxDetector", "load_detector"]
