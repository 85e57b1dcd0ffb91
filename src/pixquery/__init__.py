"""pixquery: natural-language search over photos and videos with CLIP."""

__version__ = "0.1.0"

from pixquery.errors import PixqueryError  # noqa: E402

__all__ = ["Library", "Query", "SearchResult", "PixqueryError", "__version__"]


def __getattr__(name: str) -> object:
    # Lazy so that `import pixquery` stays cheap (the CLI's --help should not load onnxruntime).
    if name in ("Library", "SearchResult"):
        from pixquery import api

        return getattr(api, name)
    if name == "Query":  # a combined query: texts and images with weights (pixquery.query)
        from pixquery.query import Query

        return Query
    raise AttributeError(name)
