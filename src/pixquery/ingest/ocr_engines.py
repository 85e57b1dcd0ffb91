"""The OCR engines pixquery can read text with, behind one small protocol.

Both are RapidOCR: PaddleOCR's PP-OCR detection (a DB segmentation net) and recognition (a CTC
line reader) as ONNX models that ship inside the wheel, so they run offline. They differ in the
models and in the package's API:

- `rapidocr` (3.x): PP-OCRv6 small detection and recognition;
- `rapidocr-onnxruntime` (1.4): PP-OCRv4 mobile detection and recognition.

bench/results/ocr-accuracy.md compares them on the same labelled photos.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from pixquery.errors import PixqueryError

INSTALL_HINT = "pip install 'pixquery[ocr]'"


class OcrEngine(Protocol):
    def detect(self, bgr: np.ndarray) -> np.ndarray:
        """Text boxes in a BGR picture, as pixel quadrilaterals (n, 4, 2)."""

    def sort(self, quads: np.ndarray) -> np.ndarray:
        """The boxes in reading order."""

    def crop(self, bgr: np.ndarray, quads: np.ndarray) -> list[np.ndarray]:
        """Each box cut out and straightened."""

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """The text of each crop, with the recogniser's confidence."""


def _missing(name: str) -> PixqueryError:
    return PixqueryError(f"--ocr needs {name}, which is not installed: {INSTALL_HINT}")


def _empty() -> np.ndarray:
    return np.zeros((0, 4, 2), np.float32)


class RapidOcr3:
    """PP-OCRv6 small, through rapidocr 3.x."""

    def __init__(self, *, det_side: int, det_thresh: float, box_thresh: float, unclip: float, threads: int | None):
        try:
            from rapidocr import RapidOCR
            from rapidocr.ch_ppocr_rec import TextRecInput
        except ImportError:
            raise _missing("rapidocr") from None
        params: dict[str, object] = {
            "Global.log_level": "warning",
            "Global.use_cls": False,
            # "max": never upscale (the picture handed over is already det_side at most).
            "Det.limit_type": "max",
            "Det.limit_side_len": det_side,
            "Det.thresh": det_thresh,
            "Det.box_thresh": box_thresh,
            "Det.unclip_ratio": unclip,
        }
        if threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        self._ocr = RapidOCR(params=params)
        # The package loads its models on first use behind these (private) loaders; calling
        # them here loads both once, and gives the detector and recogniser on their own: pixquery
        # detects on a small picture and recognises from a bigger one.
        self._det = self._ocr._load_det_model()
        self._rec = self._ocr._load_rec_model()
        self._rec_input = TextRecInput

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        out = self._det(bgr)
        if out.boxes is None or len(out.boxes) == 0:
            return _empty()
        return np.asarray(out.boxes, dtype=np.float32)

    def sort(self, quads: np.ndarray) -> np.ndarray:
        return np.asarray(self._det.sorted_boxes(quads))

    def crop(self, bgr: np.ndarray, quads: np.ndarray) -> list[np.ndarray]:
        return list(self._ocr.crop_text_regions(bgr, quads))

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:  # the package fails on an empty batch
            return []
        out = self._rec(self._rec_input(img=crops))
        return [(str(t), float(s)) for t, s in zip(out.txts or (), out.scores or ())]


class RapidOcrOnnxruntime:
    """PP-OCRv4 mobile, through rapidocr-onnxruntime 1.4."""

    def __init__(self, *, det_side: int, det_thresh: float, box_thresh: float, unclip: float, threads: int | None):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise _missing("rapidocr-onnxruntime") from None
        # limit_type "max": never upscale (the picture handed over is already det_side at most).
        self._ocr = RapidOCR(
            det_limit_type="max",
            det_limit_side_len=det_side,
            print_verbose=False,
            det_thresh=det_thresh,
            det_box_thresh=box_thresh,
            det_unclip_ratio=unclip,
            **({"intra_op_num_threads": threads, "inter_op_num_threads": 1} if threads else {}),
        )

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        boxes, _ = self._ocr.text_det(bgr)
        if boxes is None or len(boxes) == 0:
            return _empty()
        return np.asarray(boxes, dtype=np.float32)

    def sort(self, quads: np.ndarray) -> np.ndarray:
        return np.asarray(self._ocr.sorted_boxes(quads))

    def crop(self, bgr: np.ndarray, quads: np.ndarray) -> list[np.ndarray]:
        return list(self._ocr.get_crop_img_list(bgr, list(quads)))

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        texts, _ = self._ocr.text_rec(crops)
        return [(str(t), float(s)) for t, s in texts]


# engine name (the package that provides it) -> its class
ENGINES: dict[str, type[RapidOcr3] | type[RapidOcrOnnxruntime]] = {
    "rapidocr": RapidOcr3,
    "rapidocr-onnxruntime": RapidOcrOnnxruntime,
}


# What a worker process imports to use each engine: preloaded by the decode workers' process server.
_MODULES = {
    "rapidocr": ["rapidocr", "rapidocr.ch_ppocr_det", "rapidocr.ch_ppocr_rec", "rapidocr.inference_engine.onnxruntime"],
    "rapidocr-onnxruntime": ["rapidocr_onnxruntime"],
}


def modules_to_preload(name: str) -> list[str]:
    return _MODULES.get(name.split("==")[0], [])


def make_engine(
    name: str, *, det_side: int, det_thresh: float, box_thresh: float, unclip: float, threads: int | None
) -> OcrEngine:
    """The engine a (possibly resolved, "name==version") engine setting names."""
    base = name.split("==")[0]
    if base not in ENGINES:
        raise PixqueryError(f"unknown OCR engine {base!r}: one of {', '.join(ENGINES)}")
    return ENGINES[base](
        det_side=det_side, det_thresh=det_thresh, box_thresh=box_thresh, unclip=unclip, threads=threads
    )
