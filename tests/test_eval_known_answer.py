"""End-to-end evaluation on a synthetic dataset whose right answers are known.

The dataset is real image files (solid colours, one colour per class) read through the real
ingest pipeline. The encoder is a stand-in implementing the Encoder protocol: it reads the class
back from the colour and returns that class's fixed vector (orthonormal across classes) plus
Gaussian noise of a chosen size; its text tower maps "... class 3 ..." to class 3's vector. So:

* without noise, zero-shot accuracy, AUC, F1 and retrieval are perfect, positives lie at angular
  distance 0 and negatives at 0.5, and the best threshold is between the two;
* with noise sigma, image i scores class j with (delta_ij + sigma z_j) / norm, so top-1 accuracy
  is P(1 + sigma z_y > sigma z_j for all j != y) = integral phi(u) Phi(u + 1/sigma)^(C-1) du.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pixquery.encoders.base import Encoder, PreprocessConfig, l2_normalize
from pixquery.evaluation.datasets import load_dataset, resolve_templates
from pixquery.evaluation.report import write_report
from pixquery.evaluation.runners import EvalConfig, evaluate, store_threshold


def class_colour(c: int) -> tuple[int, int, int]:
    return (c % 16) * 16 + 8, (c // 16) % 16 * 16 + 8, 128


class ClassColourEncoder:
    """Known-answer stand-in for a CLIP model (a dataset with a known answer, not a mock)."""

    def __init__(self, n_classes: int, sigma: float = 0.0, dim: int = 32, seed: int = 0):
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((dim, n_classes)))
        self.class_vectors = q.T.astype(np.float32)  # orthonormal rows
        self.sigma = sigma
        self.rng = np.random.default_rng(seed + 1)
        self.name = f"synthetic-sigma{sigma}"
        self.dim = dim
        self.fingerprint = f"synthetic:{n_classes}:{sigma}:{dim}:{seed}"
        self.preprocess_cfg = PreprocessConfig(size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        rgb = batch.mean(axis=(2, 3)) * 255.0  # (n, 3): the solid colour back
        r = np.rint((rgb[:, 0] - 8) / 16).astype(int)
        g = np.rint((rgb[:, 1] - 8) / 16).astype(int)
        cls = r + 16 * g
        v = self.class_vectors[cls] + self.sigma * self.rng.standard_normal((len(cls), self.dim)).astype(np.float32)
        return l2_normalize(v)

    def encode_texts(self, texts) -> np.ndarray:
        out = np.full((len(texts), self.dim), 1 / math.sqrt(self.dim), dtype=np.float32)  # any other text
        for i, t in enumerate(texts):
            m = re.search(r"class (\d+)", t)
            if m:
                out[i] = self.class_vectors[int(m.group(1))]
        return out


def make_dataset(root: Path, n_classes: int, per_class: int) -> Path:
    rows = ["path,label"]
    for c in range(n_classes):
        for i in range(per_class):
            p = root / "img" / f"c{c:02d}_{i:03d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), class_colour(c)).save(p)
            rows.append(f"img/{p.name},class {c}")
    (root / "set.csv").write_text("\n".join(rows) + "\n")
    return root / "set.csv"


def expected_top1(sigma: float, n_classes: int) -> float:
    from math import erf

    u = np.linspace(-8, 8, 4001)
    phi = np.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + np.vectorize(erf)((u + 1 / sigma) / math.sqrt(2)))
    return float(np.trapezoid(phi * Phi ** (n_classes - 1), u))


def test_stand_in_is_an_encoder():
    assert isinstance(ClassColourEncoder(4), Encoder)


def test_perfect_separation_report_numbers(tmp_path):
    csv_path = make_dataset(tmp_path, n_classes=6, per_class=5)
    ds = load_dataset(csv_path)
    assert ds.class_names == [f"class {c}" for c in range(6)]
    config = EvalConfig(
        templates=resolve_templates("{},photo"),
        indexes=["flat"],
        index_params={"flat": [{"storage": "float32"}, {"storage": "int8"}]},
        index_k=5,
        index_queries=12,
        workers=1,
        batch_size=8,
    )
    report = evaluate(ds, [ClassColourEncoder(6, sigma=0.0)], config)
    files = write_report(report, tmp_path / "report")
    for name in (
        "report.json",
        "report.md",
        "roc.png",
        "f1_threshold.png",
        "accuracy_speed.png",
        "index_recall_query.png",
    ):
        assert files[name].is_file() and files[name].stat().st_size > 0, name
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    (m,) = data["models"]
    assert m["dim"] == 32 and m["images"]["embedded"] == 30 and m["images"]["failed_count"] == 0
    assert m["images"]["images_per_s"] > 0
    assert [r["templates"] for r in m["runs"]] == ["{}", "photo"]
    for r in m["runs"]:
        assert r["top1"] == 1.0 and r["top5"] == 1.0
        assert r["auc"] == 1.0
        b = r["best_threshold"]
        assert b["f1"] == 1.0 and b["precision"] == 1.0 and b["recall"] == 1.0
        assert r["pairs"] == {
            "positive": 30,
            "negative": 150,
            "positive_distance_mean": pytest.approx(0, abs=1e-3),
            "negative_distance_mean": pytest.approx(0.5, abs=1e-3),
        }
        # positives at ~0, negatives at ~0.5: the best threshold is midway
        assert b["angular"] == pytest.approx(0.25, abs=1e-3)
        assert b["cosine"] == pytest.approx(math.cos(0.25 * math.pi), abs=1e-3)
        ret = r["retrieval"]
        assert ret["queries"] == 6 and ret["mAP"] == 1.0 and ret["precision@5"] == 1.0
        assert ret["recall@1"] == pytest.approx(1 / 5) and ret["recall@10"] == 1.0 and ret["precision@10"] == 0.5
        assert r["texts"] == 6 and r["n_templates"] == 1
    # ROC curve goes (0,0) -> (0,1) -> (1,1)
    roc = m["runs"][0]["curves"]["roc"]
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1 and roc["fpr"][-1] == 1
    assert max(t for f, t in zip(roc["fpr"], roc["tpr"]) if f == 0) == 1.0
    idx = {x["params"]["storage"]: x for x in m["indexes"]}
    assert idx["float32"]["recall"] == 1.0 and idx["int8"]["recall"] == 1.0  # ties count as hits
    assert idx["float32"]["size_bytes"] > idx["int8"]["size_bytes"] > 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Table 5.1" in md and "## Table 5.2" in md and "| synthetic-sigma0.0 | photo | 1.000 | 1.000 |" in md
    assert "| synthetic-sigma0.0 | {} | 1.0000 |" in md  # AUC row
    assert "![ROC over the angular-distance threshold](roc.png)" in md


def test_noise_gives_the_expected_accuracy(tmp_path):
    n_classes, per_class, sigma = 8, 40, 0.6
    ds = load_dataset(make_dataset(tmp_path, n_classes, per_class))
    config = EvalConfig(templates=resolve_templates("photo"), indexes=[], workers=1)
    report = evaluate(ds, [ClassColourEncoder(n_classes, sigma=sigma, dim=64, seed=3)], config)
    (run,) = report["models"][0]["runs"]
    n = n_classes * per_class
    p = expected_top1(sigma, n_classes)
    assert 0.5 < p < 0.9  # the test is informative: neither chance nor perfect
    assert abs(run["top1"] - p) < 3.5 * math.sqrt(p * (1 - p) / n)
    assert run["top1"] <= run["top5"] <= 1.0
    # AUC of a noisy but informative model: expected value by simulating the same model
    rng = np.random.default_rng(7)
    z = rng.standard_normal((20000, n_classes)) * sigma
    rest = np.sqrt(sigma**2 * rng.chisquare(64 - n_classes, 20000))[:, None]  # dims outside the classes
    v = np.eye(n_classes)[np.zeros(20000, int)] + z
    cos = v / np.sqrt((v**2).sum(1, keepdims=True) + rest**2)
    from pixquery.evaluation.metrics import angular_distance, roc_auc

    pos = np.zeros_like(cos, bool)
    pos[:, 0] = True
    assert run["auc"] == pytest.approx(roc_auc(angular_distance(cos), pos), abs=0.03)
    assert run["best_threshold"]["f1"] > 0.3


def test_threshold_goes_into_the_catalog(tmp_path):
    from pixquery.catalog import Catalog

    ds = load_dataset(make_dataset(tmp_path, 3, 3))
    enc = ClassColourEncoder(3)
    report = evaluate(ds, [enc], EvalConfig(templates=resolve_templates("photo"), indexes=[], workers=1))
    thr = report["models"][0]["runs"][0]["best_threshold"]["angular"]
    cat_file = store_threshold(tmp_path / "lib", enc.name, enc.fingerprint, thr, source="test")
    assert cat_file == tmp_path / "lib" / "catalog.sqlite"
    with Catalog(cat_file) as cat:
        assert cat.get_threshold(enc.name, enc.fingerprint) == pytest.approx(thr)


def test_cli_reports_bad_input_clearly(tmp_path):
    import typer

    from pixquery.evaluation.cli import parse_index_params, register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root():
        pass

    (tmp_path / "bad.csv").write_text("nothing.png,cat\n")
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "bad.csv"), "--models", "x"])
    assert res.exit_code == 2  # a user error (1 means: some images could not be read)
    assert "bad.csv: 1 listed image file(s) do not exist" in res.output
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "dataset not found" in res.output
    assert parse_index_params(["hnsw:M=8,16;ef_search=32", "flat:storage=int8"]) == {
        "hnsw": [{"M": 8, "ef_search": 32}, {"M": 16, "ef_search": 32}],
        "flat": [{"storage": "int8"}],
    }
    with pytest.raises(Exception, match="KIND:NAME"):
        parse_index_params(["hnsw"])
