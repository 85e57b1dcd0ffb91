"""The search page in a real headless Chromium (Debian's chromium, driven by Playwright's Python
package through `executable_path`; no browser download), against a real `pixquery serve`.

Skipped, with the reason, when there is no Chromium binary or no Playwright package. Screenshots
go to test-output/ at the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from test_server_support import REPO, TOKEN, build_library, running_server

N_PHOTOS = 40
OUT = REPO / "test-output"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = os.environ.get("PIXQUERY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.skip(f"no Chromium at {path} (install Debian's chromium package, or set PIXQUERY_CHROMIUM)")
    return path


@contextmanager
def chromium():
    """Debian's Chromium, driven by playwright; the test skips, saying why, where either is missing."""
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def opened_page(browser, width: int = 1000, height: int = 650, console_errors: bool = False):
    """A page in a context of its own (closed after), with `page.problems`: its uncaught errors
    and, with console_errors, what it logs as errors."""
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.problems = []
    if console_errors:
        pg.on("console", lambda m: pg.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("browser")
    lib_path, photos = build_library(root, tiny_model, N_PHOTOS)
    # The tiny random model puts some of these 40 different photos 0.03 apart (angular distance),
    # where real CLIP weights put copies: the page folds near-duplicates by default, so this
    # server's threshold for them is below that (test_duplicates_page has its own, calibrated).
    with running_server(lib_path, tiny_model, root / "server.log", extra=("--duplicate-threshold", "0.01")) as server:
        server.lib_path, server.photos = lib_path, photos
        yield server


@pytest.fixture
def page(browser, served):
    with opened_page(browser, console_errors=True) as pg:
        yield pg


def _tiles(page) -> int:
    return page.locator("#grid .tile").count()


def _wait_tiles(page, n: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('#grid .tile').length >= {n}")


def _wait_score_shown(page, n: int) -> None:
    """The n-th tile's score is fully shown (hovered: its opacity transition has ended)."""
    page.wait_for_function(
        "(n) => getComputedStyle(document.querySelectorAll('#grid .tile .score')[n]).opacity === '1'", arg=n
    )


def _wait_painted(page) -> None:
    """Two animation frames: a layout change (a resized viewport) has been laid out and painted."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _wait_loaded(page, selector: str) -> None:
    page.wait_for_function(
        "(s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }", arg=selector
    )


def test_search_page_end_to_end(page, served):
    from pixquery.api import STATUS_FILE

    OUT.mkdir(exist_ok=True)
    # An index run going on (in another process) shows as a progress bar, and goes away when it ends.
    status = served.lib_path / STATUS_FILE
    status.write_text(
        json.dumps(
            {"pid": os.getpid(), "stage": "embedding", "done": 12, "total": 50, "failed": 0, "started_at": time.time()}
        )
    )
    try:
        response = page.goto(f"{served.url}/?token={TOKEN}")  # sets the cookie, redirects to /
        assert response.ok and page.url == served.url + "/"
        page.wait_for_function("() => document.getElementById('lib-images').textContent.includes('40')")
        assert "tiny-vit-b-32" in page.inner_text("#lib-model")
        assert "auto" in page.inner_text("#lib-index") and "40 entries" in page.inner_text("#lib-index")
        page.wait_for_selector("#indexing:not([hidden])")
        assert "12 / 50" in page.inner_text("#indexing-text")
    finally:
        status.unlink()
    page.wait_for_selector("#indexing", state="hidden", timeout=10_000)

    # A text query: a grid of thumbnails, one page now, the next page when scrolled to.
    page.fill("#q", "a red sports car")
    page.press("#q", "Enter")
    _wait_tiles(page, 30)
    _wait_loaded(page, "#grid .tile:nth-child(1) img")
    assert _tiles(page) == 30
    assert "30 results for “a red sports car”" in page.inner_text("#message")
    assert "#q=a+red+sports+car" in page.url
    page.locator("#sentinel").scroll_into_view_if_needed()
    _wait_tiles(page, N_PHOTOS)
    # the last page said so (its next_offset is null: nothing more will be asked), none in flight
    page.wait_for_function(
        f"() => document.getElementById('message').textContent.startsWith('{N_PHOTOS} results')"
        " && !document.getElementById('grid').hasAttribute('aria-busy')"
    )
    assert _tiles(page) == N_PHOTOS  # all 40 photos (the limit is 60), no duplicates
    names = page.eval_on_selector_all("#grid .tile img", "els => els.map(e => e.alt)")
    assert len(set(names)) == N_PHOTOS

    # Score on hover.
    page.evaluate("window.scrollTo(0, 0)")
    first = page.locator("#grid .tile").first
    first.hover()
    _wait_score_shown(page, 0)  # fades in (CSS transition); fails on timeout if it never shows
    assert "score 0." in first.get_attribute("title")

    # Keyboard: from the search box down into the grid, right, Enter opens the viewer.
    page.focus("#q")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    second_name = page.evaluate("document.activeElement.querySelector('img').alt")
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#v-name") == second_name
    page.wait_for_function("() => document.getElementById('v-img').src.endsWith('/original')")
    _wait_loaded(page, "#v-img")
    assert page.inner_text("#v-path") == str(served.photos / second_name)
    assert "320 × 240 px" in page.inner_text("#v-size")
    assert "(modified)" in page.inner_text("#v-date")
    assert "rank 2" in page.inner_text("#v-score")
    page.set_viewport_size({"width": 1280, "height": 860})
    _wait_painted(page)
    page.screenshot(path=str(OUT / "browser-viewer.png"))
    page.keyboard.press("ArrowRight")  # next result
    page.wait_for_function(f"() => document.getElementById('v-name').textContent !== {json.dumps(second_name)}")
    third_name = page.inner_text("#v-name")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")

    # "More like this": the viewed photo becomes the query; it is not among its own results.
    page.locator("#grid .tile").nth(2).click()
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#v-name") == third_name
    page.click("#v-similar")
    page.wait_for_selector("#viewer", state="hidden")
    page.wait_for_function(f"() => document.getElementById('query-caption').textContent === 'more like {third_name}'")
    _wait_tiles(page, 30)
    page.wait_for_function("() => document.getElementById('message').textContent.includes('results')")
    assert "#image=" in page.url
    assert page.is_visible("#query-image")
    assert third_name not in page.eval_on_selector_all("#grid .tile img", "els => els.map(e => e.alt)")

    # Upload a photo (the file picker): the same photo comes first, with score 1.
    upload = served.photos / "photo_0010.jpg"
    page.set_input_files("#file", str(upload))
    page.wait_for_function(
        "() => document.getElementById('query-caption').textContent === 'photos like photo_0010.jpg'"
    )
    page.wait_for_function(
        "() => document.querySelector('#grid .tile img') && document.querySelector('#grid .tile img').alt === 'photo_0010.jpg'"
    )
    assert page.locator("#grid .tile").first.locator(".score").inner_text() == "1.000"
    _wait_loaded(page, "#query-thumb")

    # Drag and drop a photo onto the page.
    dropped = served.photos / "photo_0020.jpg"
    page.evaluate(
        """async ({url, name}) => {
            const blob = await (await fetch(url)).blob();
            const dt = new DataTransfer();
            dt.items.add(new File([blob], name, {type: 'image/jpeg'}));
            document.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        {"url": f"/api/images/{_image_id(served, dropped)}/original", "name": "dropped.jpg"},
    )
    page.wait_for_function("() => document.getElementById('query-caption').textContent === 'photos like dropped.jpg'")
    page.wait_for_function(
        "() => document.querySelector('#grid .tile img') && document.querySelector('#grid .tile img').alt === 'photo_0020.jpg'"
    )
    assert page.is_hidden("#drop")

    page.fill("#q", "a dog playing in the snow")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('a dog playing in the snow')")
    # The distance slider: at its lowest no photo is close enough to the text, and the page says why;
    # back at its top (off), the results return.
    page.eval_on_selector(
        "#threshold",
        "e => { e.value = e.min; e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); }",
    )
    page.wait_for_function("() => document.getElementById('message').textContent.includes('raise the distance slider')")
    assert _tiles(page) == 0
    page.eval_on_selector(
        "#threshold",
        "e => { e.value = e.max; e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); }",
    )
    assert page.inner_text("#threshold-value") == "off"

    page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 30")
    assert page.is_hidden("#query-image")  # a text search: no query photo shown

    # The screenshot for the issue: a text search, the second tile hovered.
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#grid .tile img')).slice(0, 12).every(i => i.complete && i.naturalWidth > 0)"
    )
    page.locator("#grid .tile").nth(1).hover()
    _wait_score_shown(page, 1)
    page.screenshot(path=str(OUT / "browser-search.png"))
    assert (OUT / "browser-search.png").stat().st_size > 10_000

    assert page.problems == [], page.problems  # no script errors, no CSP violations


def test_reload_restores_the_search_from_the_url(page, served):
    page.goto(f"{served.url}/?token={TOKEN}")
    page.goto(f"{served.url}/#q=a+cat&n=30")
    _wait_tiles(page, 30)
    assert page.input_value("#q") == "a cat" and page.input_value("#limit") == "30"
    # the search is over (it said how many, nothing in flight), and the result count capped it
    page.wait_for_function(
        "() => document.getElementById('message').textContent.startsWith('30 results')"
        " && !document.getElementById('grid').hasAttribute('aria-busy')"
    )
    assert _tiles(page) == 30  # the result count caps what is loaded
    assert page.problems == [], page.problems


def test_query_string_q_works_like_the_fragment(page, served):
    """A typed or shared `/?q=dog` searches, as `/#q=dog` does (issue 11 item 12); so does
    `/?token=T&q=dog`, the URL `serve` prints with a query added."""
    page.goto(f"{served.url}/?token={TOKEN}")
    page.goto(f"{served.url}/?q=a+dog&n=30")
    _wait_tiles(page, 30)
    assert page.input_value("#q") == "a dog" and page.input_value("#limit") == "30"
    assert "#q=a+dog" in page.url
    assert page.problems == [], page.problems
    page.goto("about:blank")  # nothing left loading with the cookie about to go
    page.context.clear_cookies()
    page.goto(f"{served.url}/?token={TOKEN}&q=a+red+car")
    _wait_tiles(page, 30)
    assert page.input_value("#q") == "a red car" and "token" not in page.url
    assert page.problems == [], page.problems


def test_page_without_token_asks_for_it(page, served):
    response = page.goto(served.url + "/")
    assert response.status == 401
    page.fill("input[name=token]", TOKEN)
    page.press("input[name=token]", "Enter")
    page.wait_for_url(served.url + "/")
    page.wait_for_function("() => document.getElementById('lib-images').textContent.includes('40')")


def test_api_docs_render_without_the_internet(page, served):
    """/api/docs is Swagger UI served by pixquery itself: with every request to another host
    refused, the page still renders the operations from /api/openapi.json."""
    outside = []

    def only_this_server(route):
        if route.request.url.startswith(served.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{served.url}/?token={TOKEN}")
    page.goto(f"{served.url}/api/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/search" in p for p in paths), paths
    assert outside == []
    assert page.problems == [], page.problems


def _image_id(served, path: Path) -> int:
    from pixquery.catalog import Catalog

    cat = Catalog(served.lib_path / "catalog.sqlite")
    try:
        return cat.image_by_path(str(path)).id
    finally:
        cat.close()


def test_video_hit_plays_at_the_matching_moment(page, served, tiny_model):
    pytest.importorskip("av", reason="video support needs PyAV (the [video] extra)")
    from test_server_support import index_again
    from videos import make_video

    make_video(served.photos / "clip.webm", [(2.0, 31), (2.0, 32)], fps=10, size=(160, 96))
    index_again(served.lib_path, tiny_model)
    page.goto(f"{served.url}/?token={TOKEN}")
    page.select_option("#limit", "120")
    page.fill("#q", "a short film")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('results for')")
    page.locator("#sentinel").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('#grid .tile .badge') !== null")
    tile = page.locator("#grid .tile", has=page.locator(".badge")).first
    badge = tile.locator(".badge").inner_text()
    assert badge.startswith("▶ 0:0")
    _wait_loaded(page, "#grid .tile:has(.badge) img")
    tile.click()
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#v-name") == "clip.webm"
    assert page.inner_text("#v-when").startswith(badge.removeprefix("▶ "))
    assert page.is_hidden("#v-similar")
    page.wait_for_selector("#v-video:not([hidden])")  # the player replaced the frame once it could play
    t = page.eval_on_selector("#v-video", "v => v.currentTime")
    start = float(page.eval_on_selector("#v-video", "v => v.src.split('#t=')[1]"))
    assert abs(t - start) < 0.6
    page.screenshot(path=str(OUT / "browser-video.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    # the dialog hides at once; its "close" event (which stops the player) comes a task later
    page.wait_for_function(
        "() => { const v = document.getElementById('v-video'); return v.paused && !v.getAttribute('src'); }"
    )
    assert page.problems == [], page.problems


# -- search as you type --------------------------------------------------------------------------

# Every render of the results: the query of the tiles added (#grid's data-query) and each text the
# status line showed; recorded by a MutationObserver, so nothing shown can escape the check.
_RECORD_RENDERS = """() => {
    window.__renders = []; window.__messages = [];
    const grid = document.getElementById('grid'), message = document.getElementById('message');
    new MutationObserver((records) => {
        if (records.some((r) => r.addedNodes.length)) window.__renders.push(grid.dataset.query);
    }).observe(grid, {childList: true});
    new MutationObserver(() => window.__messages.push(message.textContent))
        .observe(message, {childList: true, characterData: true, subtree: true});
}"""


def _q(url: str) -> str | None:
    """The text query of a GET /api/search URL, else None."""
    u = urlparse(url)
    return parse_qs(u.query).get("q", [None])[0] if u.path == "/api/search" else None


def _typing_page(page, served):
    """The page loaded, renders recorded, every search request (sent, failed) listed by its query."""
    page.goto(f"{served.url}/?token={TOKEN}")
    page.wait_for_function("() => document.getElementById('lib-images').textContent.includes('40')")
    page.evaluate(_RECORD_RENDERS)
    sent, failed = [], []
    page.on("request", lambda r: sent.append(_q(r.url)) if _q(r.url) else None)
    page.on("requestfailed", lambda r: failed.append(_q(r.url)) if _q(r.url) else None)
    return int(page.get_attribute("#q", "data-debounce-ms")), sent, failed


def _names(page) -> list[str]:
    return page.eval_on_selector_all("#grid .tile img", "els => els.map(e => e.alt)")


def _api_names(served, q: str) -> list[str]:
    with served.client() as c:
        r = c.get("/api/search", params={"q": q, "k": 30})
        r.raise_for_status()
        return [x["name"] for x in r.json()["results"]]


def _wait_results_for(page, q: str) -> None:
    page.wait_for_function(
        "(q) => document.getElementById('message').textContent.includes(`results for “${q}”`)", arg=q
    )


def test_search_as_you_type(page, served):
    """Typing searches (debounced); a slow answer to an earlier prefix, held back by the test until
    the last query's results are shown, is aborted by the page and never rendered; the final
    results are the last query's. Then: no request for an unchanged query, Enter searches at once,
    an error is shown and typing goes on, an emptied box clears the results."""
    debounce, sent, failed = _typing_page(page, served)
    assert 80 <= debounce <= 300
    slow, final = "a red ca", "a red car"
    assert _api_names(served, slow) != _api_names(served, final)  # else the check below proves nothing
    held = []
    page.route(
        lambda url: _q(url) == slow, lambda route: held.append(route)
    )  # the answer to `slow` waits until released

    box = page.locator("#q")
    entries = page.evaluate("history.length")
    with page.expect_request(lambda r: _q(r.url) == slow):
        box.press_sequentially(slow, delay=20)  # faster than the debounce: one request, after the pause
    with page.expect_event("requestfailed", predicate=lambda r: _q(r.url) == slow):
        box.press_sequentially(final[len(slow) :])  # the new search aborts the request in flight
    _wait_results_for(page, final)
    assert len(held) == 1
    try:
        held[0].continue_()  # too late: the browser gave up on it
    except Exception:
        pass
    assert _names(page) == _api_names(served, final)
    assert slow in failed
    assert len(sent) < len(final), sent  # debounced: fewer requests than keystrokes
    assert sent[-1] == final and sent.count(final) == 1
    renders = page.evaluate("window.__renders")
    assert renders and renders[-1] == final and slow not in renders, renders
    assert not any(f"“{slow}”" in m for m in page.evaluate("window.__messages"))
    assert page.get_attribute("#grid", "aria-busy") is None
    assert page.get_attribute("#message", "role") == "status"  # announced to screen readers
    assert "#q=a+red+car" in page.url
    assert page.evaluate("history.length") == entries + 1  # one history entry for the typing, not one per search

    # No request when the query does not change: a letter typed and deleted, a space, Enter.
    n = len(sent)
    box.press_sequentially("x")
    box.press("Backspace")
    box.press_sequentially(" ")
    # The one wait left: proving that a debounced search never fires needs its timer to run out
    # (no event to wait for). Enter's needs none: the next search's request, below, comes after any it sent.
    page.wait_for_timeout(debounce * 3)
    assert len(sent) == n, sent[n:]
    box.press("Enter")
    assert _names(page) == _api_names(served, final)

    # Enter searches at once, without waiting for the debounce.
    page.evaluate("""() => document.getElementById('q').addEventListener('keydown', (e) => {
        if (e.key === 'Enter') window.__enterAt = performance.now(); })""")
    box.fill("")
    box.press_sequentially("a green tree", delay=10)
    box.press("Enter")
    _wait_results_for(page, "a green tree")
    gap = page.evaluate("""() => performance.getEntriesByType('resource')
        .filter((e) => e.name.includes('q=a+green+tree'))[0].startTime - window.__enterAt""")
    assert gap < debounce / 2, gap
    assert sent[n:] == ["a green tree"], sent[n:]  # nothing for the unchanged query's Enter before it, one for it

    # An error is shown; typing goes on and the next query is answered.
    page.route(
        lambda url: _q(url) == "a green trees",
        lambda route: route.fulfill(
            status=500, content_type="application/json", body=json.dumps({"error": "the index exploded", "status": 500})
        ),
    )
    box.press_sequentially("s")
    page.wait_for_selector("#message.error")
    assert page.inner_text("#message") == "the index exploded"
    assert _tiles(page) == 0  # not the results of another query under an error
    box.press("Backspace")
    _wait_results_for(page, "a green tree")
    assert not page.is_visible("#message.error") and _tiles(page) == 30

    # Emptying the box clears the results (and the URL).
    box.fill("")
    page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 0")
    assert page.inner_text("#message") == "" and "q=" not in page.url
    page.go_back()  # to the search made with Enter
    _wait_results_for(page, "a green tree")
    assert page.input_value("#q") == "a green tree" and _tiles(page) == 30
    expected = [p for p in page.problems if "status of 500" in p]  # the browser logs the failed request
    assert len(expected) == 1 and page.problems == expected, page.problems


def test_a_late_answer_never_replaces_a_newer_one(page, served):
    """The second guard alone: with aborting disabled in the page (a no-op AbortController.abort),
    the held answer to an earlier prefix really arrives after the last query's results, and is
    dropped (counted in #grid's data-stale), never rendered."""
    page.add_init_script("AbortController.prototype.abort = function () {};")
    debounce, sent, failed = _typing_page(page, served)
    slow, final = "a blue bo", "a blue boat"
    held = []
    page.route(lambda url: _q(url) == slow, lambda route: held.append(route))
    box = page.locator("#q")
    with page.expect_request(lambda r: _q(r.url) == slow):
        box.press_sequentially(slow, delay=20)
    box.press_sequentially(final[len(slow) :], delay=20)
    _wait_results_for(page, final)
    shown = _names(page)
    assert shown == _api_names(served, final)
    with page.expect_response(lambda r: _q(r.url) == slow):
        held[0].continue_()  # the stale answer now reaches the page
    # the page has dealt with it: dropped it (counted), or (the bug this test is for) rendered it
    page.wait_for_function(
        "(q) => document.getElementById('grid').dataset.stale === '1' || window.__renders.includes(q)", arg=slow
    )
    assert _names(page) == shown
    renders = page.evaluate("window.__renders")
    assert renders[-1] == final and slow not in renders, renders
    assert not any(f"“{slow}”" in m for m in page.evaluate("window.__messages"))
    assert failed == []  # nothing was aborted: the sequence number alone kept the answer out
    assert page.problems == [], page.problems


def test_duplicates_page_and_folded_search(browser, tmp_path, tiny_model):
    """The duplicates page shows the planted groups side by side with sizes and dates and the one
    to keep; the search page folds the copies into one result (on by default) and shows them all
    when folding is turned off. Threshold: calibrated from the tiny model's stored embeddings."""
    from photos import make_photos
    from pixquery.api import Library
    from test_duplicates import _calibrate, _plant

    OUT.mkdir(exist_ok=True)
    photos = tmp_path / "photos"
    planted = _plant(photos, make_photos(photos, 6))
    lib_path = tmp_path / "library"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        lib.index([str(photos)], workers=1)
        original = min(planted["resized"], key=len)
    threshold = _calibrate(lib_path, tiny_model, planted)
    with (
        running_server(
            lib_path, tiny_model, tmp_path / "server.log", extra=("--duplicate-threshold", f"{threshold:.6f}")
        ) as served,
        opened_page(browser, 1100, 800) as page,
    ):
        page.goto(f"{served.url}/?token={TOKEN}")
        page.click("#duplicates-link")
        page.wait_for_selector("#groups[data-loaded='3']")
        assert page.url == served.url + "/duplicates"
        assert "3 groups, 4 copies" in page.inner_text("#summary")
        groups = page.locator(".dup-group")
        first = groups.nth(0)
        assert first.locator(".dup-member").count() == 3 and first.get_attribute("data-kind") == "near"
        keep = first.locator(".dup-member.keep")
        assert keep.count() == 1 and keep.locator(".name").inner_text() == Path(original).name
        assert "keep (suggested)" in keep.inner_text()
        text = first.inner_text()
        assert "320 × 240 px" in text and "160 × 120 px" in text  # pixel sizes, side by side
        assert "2020" in text and "2023" in text  # the dates (originals 2020, copies 2023)
        assert "KB" in text and "near-duplicate · distance 0.0" in text
        exact = page.locator(".dup-group[data-kind='exact']")
        assert exact.count() == 1 and "same bytes" in exact.inner_text()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.dup-member img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        page.screenshot(path=str(OUT / "duplicates-page.png"), full_page=True)

        page.select_option("#keep", "newest")  # another rule: a copy (2023) is kept
        page.wait_for_function(
            "() => location.hash.includes('keep=newest') && document.getElementById('groups').dataset.loaded === '3' && document.querySelector('.dup-member.keep .name')?.textContent.includes('_')"
        )
        assert "copies" in page.locator(".dup-group").nth(0).locator(".dup-member.keep .path").inner_text()
        page.check("#exact")
        page.wait_for_selector("#groups[data-loaded='1']")
        assert page.locator(".dup-group").count() == 1 and "exact copies" in page.inner_text(".dup-group h2")

        # The search page folds near-duplicates by default: 10 photos, 6 different pictures.
        page.goto(f"{served.url}/#q=a+photo")
        page.wait_for_function("() => document.getElementById('message').textContent.includes('results for')")
        names = page.eval_on_selector_all("#grid .tile img", "els => els.map(e => e.alt)")
        assert len(names) == 6 and len(set(names)) == 6
        for group in planted.values():  # one photo of each group is shown, the others folded into it
            assert len({Path(p).name for p in group} & set(names)) == 1
        badges = page.eval_on_selector_all("#grid .tile .dups", "els => els.map(e => e.textContent)")
        assert sorted(badges) == ["+1", "+1", "+2"]
        page.screenshot(path=str(OUT / "duplicates-folded-search.png"))
        page.uncheck("#collapse")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 10")
        assert page.locator("#grid .tile .dups").count() == 0
        assert "c=0" in page.url
        assert not page.problems, page.problems
