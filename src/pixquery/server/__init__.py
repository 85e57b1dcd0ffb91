"""`pixquery serve`: a search page and a JSON API over a library, safe to leave running.

    from pixquery.server import ServerConfig, create_app
    app = create_app(ServerConfig(library="~/.local/share/pixquery"))   # an ASGI app (FastAPI)

See docs/server.md for the endpoints and the security model.
"""

from pixquery.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
