"""The guard in front of everything: bind rules, the Host check (DNS rebinding), the token, security headers."""

from __future__ import annotations

import hmac
import html
import json
import time
from urllib.parse import parse_qs, quote, urlencode

from starlette.datastructures import Headers

from pixquery.errors import PixqueryError

TOKEN_COOKIE = "pixquery_token"
TOKEN_HEADER = "x-pixquery-token"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, allow_public: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless explicitly forced."""
    if not is_loopback(host) and not token and not allow_public:
        raise PixqueryError(
            f"refusing to listen on {host} without a token: anyone who can reach this machine could browse "
            "your photos. Give --token (or set PIXQUERY_TOKEN), or pass --allow-public if you really mean it."
        )


_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pixquery: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>pixquery</h1><p>{message}</p>
<form method="get" action="/"><label>Token <input type="password" name="token" autofocus autocomplete="current-password"></label>
<button type="submit">Open</button></form>
<p>The URL printed by <code>pixquery serve</code> carries the token (<code>/?token=...</code>).</p></main></body></html>"""


class Guard:
    """Pure ASGI middleware in front of everything (the page, the API, the OpenAPI docs).

    - On loopback, requests must name a loopback host (Host header): a web page elsewhere cannot
      reach the server through DNS rebinding.
    - With a token set, every request must carry it: `Authorization: Bearer T`, the
      `X-Pixquery-Token: T` header, or the `pixquery_token` cookie. Opening `/?token=T` once sets
      that cookie (HttpOnly, SameSite=Strict) and redirects to `/` so the token leaves the URL.
      Missing or wrong: 401 (JSON for the API, a small form for the page).
    - Security headers on every answer: nosniff, no referrer, no framing; and `Server-Timing: app;dur=MS`
      (the time the app took up to the answer's head).
    """

    def __init__(self, app, token: str | None, loopback_only_hosts: bool):
        self.app = app
        self.token = token.encode() if token else None
        self.loopback_only_hosts = loopback_only_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.loopback_only_hosts and not _loopback_host_header(headers.get("host", "")):
            return await _send_json(send, 400, "bad Host header: this server answers to localhost / 127.0.0.1 only")
        if self.token is not None:
            path = scope["path"]
            qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if path == "/" and "token" in qs:
                if self._ok(qs["token"][0]):
                    cookie = f"{TOKEN_COOKIE}={quote(qs['token'][0], safe='')}; Path=/; HttpOnly; SameSite=Strict"
                    rest = urlencode([(k, v) for k, vs in qs.items() if k != "token" for v in vs])  # e.g. q=dog
                    where = ("/?" + rest if rest else "/").encode("latin-1", "replace")
                    return await _send(
                        send, 303, b"", "text/plain", extra=[(b"location", where), (b"set-cookie", cookie.encode())]
                    )
                return await self._refuse(send, path, "That token is wrong.")
            supplied = _supplied_token(headers)
            if supplied is None:
                return await self._refuse(send, path, "This pixquery server needs a token.")
            if not self._ok(supplied):
                return await self._refuse(send, path, "That token is wrong.")

        t0 = time.perf_counter()

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                hs = list(message.get("headers", []))
                names = {k.lower() for k, _ in hs}
                for k, v in _SECURITY_HEADERS:
                    if k not in names:
                        hs.append((k, v))
                # The time inside the server up to the answer's head (routing, the endpoint, JSON):
                # shown by browsers' developer tools, read by bench/typing.py.
                hs.append((b"server-timing", f"app;dur={(time.perf_counter() - t0) * 1000:.2f}".encode()))
                message = {**message, "headers": hs}
            await send(message)

        return await self.app(scope, receive, send_with_headers)

    def _ok(self, supplied: str) -> bool:
        return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), self.token)

    async def _refuse(self, send, path: str, message: str) -> None:
        if path == "/":
            body = _LOGIN_PAGE.format(message=html.escape(message)).encode()
            return await _send(
                send,
                401,
                body,
                "text/html; charset=utf-8",
                extra=[(b"content-security-policy", b"default-src 'none'; form-action 'self'")],
            )
        return await _send_json(
            send,
            401,
            message.lower().rstrip(".") + " (send it as 'Authorization: Bearer TOKEN')",
            extra=[(b"www-authenticate", b'Bearer realm="pixquery"')],
        )


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _loopback_host_header(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in LOOPBACK_NAMES or (name.startswith("127.") and is_loopback(name))


def _supplied_token(headers: Headers) -> str | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if headers.get(TOKEN_HEADER):
        return headers[TOKEN_HEADER]
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            from urllib.parse import unquote

            return unquote(value)
    return None


async def _send(send, status: int, body: bytes, ctype: str, extra: list | None = None) -> None:
    headers = [
        (b"content-type", ctype.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *_SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await _send(send, status, body, "application/json", extra)
