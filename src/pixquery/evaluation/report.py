"""The report folder: ``report.json`` (every number), ``report.md`` (tables in the study's layout)
and the PNG plots from `plots.py`.

Tables: Table 5.1 (model comparison: top-1, top-5, inference time, throughput, model size,
embedding size), Table 5.2 (AUC of the angular-distance ROC), the best threshold per model
(Figure 5.3's maximum), text-to-image retrieval, and the index sweep of Section 5.3 (recall,
build / load / query time, size).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from pixquery.errors import PixqueryError


def model_label(model: dict) -> str:
    """A short name for tables and legends: the folder name of a path, else the spec."""
    spec = str(model.get("spec") or model.get("name"))
    if "/" in spec or os.sep in spec:
        return Path(spec.rstrip("/")).name or spec
    return spec


def run_label(model: dict, run: dict, many_templates: bool) -> str:
    return f"{model_label(model)} [{run['templates']}]" if many_templates else model_label(model)


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _g(x) -> str:
    """Times, rates and sizes with about 3 significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _mb(x) -> str:
    return "n/a" if x is None else _g(x / 1e6)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict, plots: dict[str, str] | None = None) -> str:
    ds = report["dataset"]
    models = report["models"]
    out = [f"# pixquery evaluation: {ds['name']}", ""]
    out.append(
        f"Dataset `{ds['root']}` ({ds['kind']}): {ds['items']} images, {ds['classes']} classes "
        f"({ds['classes_present']} present), {'multi-label' if ds['multi_label'] else 'one label per image'}."
    )
    tpl = ", ".join(f"`{t['name']}` ({t['count']})" for t in report["config"]["templates"])
    out.append(
        f"Prompt templates: {tpl}. Machine: {report['machine']['processor']}, "
        f"{report['machine']['cpus']} CPUs, {report['machine']['platform']}."
    )
    for n in ds.get("notes", []):
        out.append(f"- note: {n}")
    for m in models:
        if m["images"]["failed_count"]:
            out.append(f"- {model_label(m)}: {m['images']['failed_count']} image(s) could not be read and were skipped")
    out.append("")

    rows51, rows52, rows_thr, rows_ret = [], [], [], []
    ks = report["config"]["retrieval_ks"]
    for m in models:
        im = m["images"]
        for r in m["runs"]:
            label = model_label(m)
            rows51.append(
                [
                    label,
                    r["templates"],
                    _f(r["top1"]),
                    _f(r["top5"]),
                    _g(im["ms_per_image"]),
                    _g(im["images_per_s"]),
                    _g(im["images_per_s_end_to_end"]),
                    _g(r["texts_per_s"]),
                    _mb(m["size_bytes"]),
                    str(m["dim"]),
                ]
            )
            rows52.append([label, r["templates"], _f(r["auc"], 4)])
            b = r["best_threshold"]
            rows_thr.append(
                [
                    label,
                    r["templates"],
                    _f(b["angular"], 4),
                    _f(b["cosine"], 4),
                    _f(b["f1"]),
                    _f(b["precision"]),
                    _f(b["recall"]),
                ]
            )
            ret = r["retrieval"]
            rows_ret.append(
                [label, r["templates"]]
                + [_f(ret[f"precision@{k}"]) for k in ks]
                + [_f(ret[f"recall@{k}"]) for k in ks]
                + [_f(ret["mAP"]), str(ret["queries"])]
            )

    out += ["## Table 5.1: model comparison (zero-shot classification)", ""]
    out.append(
        _table(
            [
                "Model",
                "Prompts",
                "Top-1",
                "Top-5",
                "Inference (ms/image)",
                "Images/s (encoder)",
                "Images/s (with decoding)",
                "Texts/s",
                "Model size (MB)",
                "Embedding size",
            ],
            rows51,
        )
    )
    out += [
        "",
        "Inference time is the image encoder's own time per image in batches of "
        f"{report['config']['batch_size']}, measured during this run.",
        "",
    ]
    out += ["## Table 5.2: area under the ROC curve (angular distance)", ""]
    out.append(_table(["Model", "Prompts", "AUC"], rows52))
    out += [
        "",
        "Pairs: every (image, class) pair; positive when the class is one of the image's labels; "
        "score = angular distance arccos(cos)/pi between image and class-prompt embeddings.",
        "",
    ]
    out += ["## Best threshold (maximum of F1 over the angular-distance threshold)", ""]
    out.append(_table(["Model", "Prompts", "Threshold (angular)", "As cosine", "F1", "Precision", "Recall"], rows_thr))
    stored = [m for m in models if m.get("stored_threshold")]
    if stored:
        out.append("")
        for m in stored:
            s = m["stored_threshold"]
            out.append(
                f"- stored for `{m['name']}` in {s['catalog']}: {_f(s['threshold'], 4)} "
                f"(from prompts `{s['templates']}`); `pixquery search --threshold auto` uses it"
            )
    out += ["", "## Text-to-image retrieval (one query per class present, class prompt as the query)", ""]
    out.append(
        _table(["Model", "Prompts"] + [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + ["mAP", "Queries"], rows_ret)
    )
    idx_rows = []
    for m in models:
        for x in m.get("indexes", []):
            shown = x.get("shown_params", x.get("params")) or {}
            params = ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults"
            idx_rows.append(
                [
                    model_label(m),
                    x["kind"],
                    params,
                    _f(x["recall"]),
                    _g(x["build_s"]),
                    _g(x["load_s"]),
                    _g(x["query_ms"]),
                    _mb(x["size_bytes"]),
                ]
            )
    if idx_rows:
        k = models[0]["indexes"][0]["k"] if models and models[0].get("indexes") else report["config"]["index_k"]
        q = models[0]["indexes"][0]["queries"] if models and models[0].get("indexes") else 0
        out += ["", "## Section 5.3: indexes on the dataset's image vectors", ""]
        out.append(
            _table(
                ["Model", "Index", "Parameters", f"Recall@{k}", "Build (s)", "Load (s)", "Query (ms)", "Size (MB)"],
                idx_rows,
            )
        )
        out += [
            "",
            f"Recall against exact search over {q} image vectors used as single queries; "
            "query time is per single query (one thread policy of the index).",
            "",
        ]
    if plots:
        out += ["", "## Plots", ""]
        for title, fn in plots.items():
            out.append(f"![{title}]({fn})")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o):
    """NaN/inf -> None so that the JSON is standard (json.dumps would write NaN)."""
    import numpy as np

    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_report(report: dict, out_dir: str | Path, with_plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and the plots into `out_dir`; returns the files written."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PixqueryError(f"{out}: cannot create the report folder: {e.strerror}") from None
    files: dict[str, Path] = {}
    plots: dict[str, str] = {}
    if with_plots:
        from pixquery.evaluation.plots import write_plots

        for title, p in write_plots(report, out).items():
            plots[title] = p.name
            files[p.name] = p
    data = json.loads(json.dumps(_clean(report), default=_json_default))
    (out / "report.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    files["report.json"] = out / "report.json"
    (out / "report.md").write_text(markdown(report, plots), encoding="utf-8")
    files["report.md"] = out / "report.md"
    return files
