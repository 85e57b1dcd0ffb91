"""`pixquery serve`: a search page and a JSON API over a library, safe to leave running.

    from pixquery.server import ServerConfig, create_app
    app = create_app(ServerConfig(library="~/.local/share/pixquery"))   # an ASGI app (FastAPI)

See docs/server.md for the endpoints and the security model.
"""

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str):
    # Imported on first use: FastAPI takes ~0.3 s to import, and every `pixquery` command loads
    # this package to register `serve`.
    if name in __all__:
        from pixquery.server import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
