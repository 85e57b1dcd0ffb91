"""Evaluation: the study's model/threshold/index comparison as a command (`pixquery eval`).

datasets (labelled collections, prompt templates) -> runners (embed, time, score) ->
metrics (pure numpy) -> report (JSON + Markdown tables) and plots (PNG).
"""

from pixquery.evaluation.datasets import Dataset, Item, Templates, load_dataset, resolve_templates

__all__ = ["Dataset", "Item", "Templates", "load_dataset", "resolve_templates"]
