"""Evaluation: the study's model/threshold/index comparison as a command (`pixquery eval`).

datasets (labelled collections, prompt templates) -> runners (embed, time, score) ->
metrics (pure numpy) -> report (JSON + Markdown tables) and plots (PNG).
"""

__all__ = ["Dataset", "Item", "Templates", "load_dataset", "resolve_templates"]


def __getattr__(name: str):
    # Imported on first use: every `pixquery` command loads this package to register `eval`.
    if name in __all__:
        from pixquery.evaluation import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
