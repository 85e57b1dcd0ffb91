"""PNG plots of an evaluation report (matplotlib, Agg backend: no display needed).

* ``roc.png``: ROC over the angular-distance threshold, one curve per model (and prompt set),
  AUC in the legend (the study's Figure 5.2).
* ``f1_threshold.png``: F1 against the angular-distance threshold with the best threshold marked
  (Figure 5.3).
* ``accuracy_speed.png``: zero-shot top-1 (filled) and top-5 (hollow) against images/s.
* ``index_recall_query.png``: recall@k against time per query for each index kind (Section 5.3).
"""

from __future__ import annotations

from pathlib import Path

from pixquery.evaluation.report import model_label, run_label


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _runs(report: dict):
    many = len(report["config"]["templates"]) > 1
    for m in report["models"]:
        for r in m["runs"]:
            yield m, r, run_label(m, r, many)


def plot_roc(report: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5.5), dpi=120)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
    for _, r, label in _runs(report):
        roc = r["curves"]["roc"]
        auc = r["auc"]
        auc_s = "n/a" if auc is None or auc != auc else f"{auc:.3f}"
        ax.plot(roc["fpr"], roc["tpr"], lw=1.6, label=f"{label} (AUC {auc_s})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC over the angular-distance threshold\n{report['dataset']['name']}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_f1(report: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for _, r, label in _runs(report):
        c = r["curves"]["threshold"]
        b = r["best_threshold"]
        (line,) = ax.plot(c["threshold"], c["f1"], lw=1.6, label=f"{label} (best {b['angular']:.4f}, F1 {b['f1']:.3f})")
        ax.axvline(b["angular"], color=line.get_color(), ls="--", lw=0.8)
        ax.plot([b["angular"]], [b["f1"]], "o", color=line.get_color())
    ax.set_xlabel("angular-distance threshold (match when distance <= threshold)")
    ax.set_ylabel("F1")
    ax.set_ylim(bottom=0)
    ax.set_title(f"F1 against the threshold\n{report['dataset']['name']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_accuracy_speed(report: dict, path: Path) -> Path:
    """Colour = model, marker = prompt set; filled = top-1, hollow = top-5."""
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    templates = [t["name"] for t in report["config"]["templates"]]
    handles = []
    for i, m in enumerate(report["models"]):
        col = colors[i % len(colors)]
        x = m["images"]["images_per_s"] or 0.0
        for r in m["runs"]:
            mk = markers[templates.index(r["templates"]) % len(markers)] if r["templates"] in templates else "o"
            ax.plot([x], [r["top1"]], mk, color=col, ms=8)
            ax.plot([x], [r["top5"]], mk, mfc="none", color=col, ms=8)
        handles.append(Line2D([], [], color=col, marker="o", ls="", label=model_label(m)))
    if len(templates) > 1:
        handles += [
            Line2D([], [], color="grey", marker=markers[k % len(markers)], ls="", label=f"prompts {t}")
            for k, t in enumerate(templates)
        ]
    ax.set_xlabel("images/s (image encoder, this machine)")
    ax.set_ylabel("zero-shot accuracy (filled: top-1, hollow: top-5)")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0, right=max([m["images"]["images_per_s"] or 0 for m in report["models"]] + [1]) * 1.15)
    ax.set_title(f"Accuracy against speed\n{report['dataset']['name']}")
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_index(report: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    k = None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    styles = ["-", "--", ":", "-."]
    all_kinds = sorted({x["kind"] for m in report["models"] for x in m.get("indexes", [])})
    many = len(report["models"]) > 1
    for mi, m in enumerate(report["models"]):
        by_kind: dict[str, list[dict]] = {}
        for x in m.get("indexes", []):  # sweep points stay in the order they were given
            by_kind.setdefault(x["kind"], []).append(x)
            k = x["k"]
        for kind, xs in by_kind.items():
            ax.plot(
                [x["query_ms"] for x in xs],
                [x["recall"] for x in xs],
                color=colors[all_kinds.index(kind) % len(colors)],
                marker=markers[mi % len(markers)],
                ls=styles[mi % len(styles)],
                ms=6,
                alpha=0.85,
                label=f"{model_label(m)} {kind}" if many else kind,
            )
    ax.set_xscale("log")
    ax.set_xlabel("time per single query (ms, log scale)")
    ax.set_ylabel(f"recall@{k} against exact search")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Index recall against query time\n{report['dataset']['name']}")
    ax.legend(fontsize=7, ncol=2 if many else 1)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(report: dict, out_dir: Path) -> dict[str, Path]:
    """All plots that the report has data for; returns title -> file."""
    out_dir = Path(out_dir)
    files = {
        "ROC over the angular-distance threshold": plot_roc(report, out_dir / "roc.png"),
        "F1 against the threshold": plot_f1(report, out_dir / "f1_threshold.png"),
        "Accuracy against speed": plot_accuracy_speed(report, out_dir / "accuracy_speed.png"),
    }
    if any(m.get("indexes") for m in report["models"]):
        files["Index recall against query time"] = plot_index(report, out_dir / "index_recall_query.png")
    return files
