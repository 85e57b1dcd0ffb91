"""Combined queries on the search page, in a real headless Chromium against a real `pixquery
serve` (the harness of test_browser.py): the typed syntax, and "More like this" / "Less like this"
on a result refine the search; the tiles shown are the API's answer to the combined query."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

from test_browser import _tiles, browser, page, served  # noqa: F401 (fixtures)
from test_server_support import TOKEN

QUERY = "a beach +sunset -people"


def shown(page) -> list[str]:
    return page.eval_on_selector_all("#grid .tile img", "els => els.map(e => e.alt)")


def api_names(page, params: list[tuple[str, str]]) -> list[str]:
    """The names the API returns for these parameters, asked from inside the page (its cookie)."""
    query = "&".join(f"{k}={v}" for k, v in params)
    body = page.evaluate("async (q) => (await fetch('/api/search?' + q)).json()", query)
    return [r["name"] for r in body["results"]]


def wait_for(page, params, n):
    """Until the grid shows exactly the API's first n answers for `params`."""
    want = api_names(page, params + [("k", str(n))])
    page.wait_for_function(
        "(want) => { const got = Array.from(document.querySelectorAll('#grid .tile img')).map(e => e.alt);"
        " return got.length >= want.length && want.every((w, i) => got[i] === w); }",
        arg=want,
    )
    return want


def open_tile(page, i: int) -> tuple[str, int]:
    page.locator("#grid .tile").nth(i).click()
    page.wait_for_selector("#viewer[open]")
    name = page.inner_text("#v-name")
    page.wait_for_function("() => document.getElementById('v-img').src.endsWith('/original')")
    image_id = int(page.eval_on_selector("#v-img", "e => e.src").split("/api/images/")[1].split("/")[0])
    return name, image_id


def test_typed_syntax_and_more_or_less_like_a_result(page, served):  # noqa: F811
    page.goto(f"{served.url}/?token={TOKEN}")
    page.fill("#q", QUERY)
    page.press("#q", "Enter")
    q = ("q", "a+beach+%2Bsunset+-people")
    plain = wait_for(page, [q], 30)
    assert f"for “{QUERY}”" in page.inner_text("#message") and page.is_hidden("#refine")
    assert page.eval_on_selector("#grid", "e => e.dataset.query") == QUERY

    # More like the third result: it joins the search (and leaves the results), the grid is the
    # API's answer to the text plus that photo
    liked_name, liked = open_tile(page, 2)
    page.click("#v-more")
    page.wait_for_selector("#viewer", state="hidden")
    page.wait_for_selector("#refine:not([hidden])")
    assert page.inner_text("#refine-text") == f"more like {liked_name}"
    refined = wait_for(page, [q, ("like", str(liked))], 30)
    assert liked_name not in shown(page)[:30] and refined != plain
    assert parse_qs(urlparse(page.url).fragment)["like"] == [str(liked)]
    assert "1 photo added or subtracted" in page.inner_text("#message")

    # Less like the first result, by the keyboard's "-"
    first_name, first = open_tile(page, 0)
    page.keyboard.press("-")
    page.wait_for_selector("#viewer", state="hidden")
    page.wait_for_function("() => document.getElementById('refine-text').textContent.includes('less like')")
    assert page.inner_text("#refine-text") == f"more like {liked_name} · less like {first_name}"
    both = wait_for(page, [q, ("like", str(liked)), ("unlike", str(first))], 30)
    fragment = parse_qs(urlparse(page.url).fragment)
    assert fragment["like"] == [str(liked)] and fragment["unlike"] == [str(first)]

    # A reload restores the refined search from the URL
    page.reload()
    wait_for(page, [q, ("like", str(liked)), ("unlike", str(first))], 30)
    assert shown(page)[:30] == both
    assert page.input_value("#q") == QUERY and page.is_visible("#refine")

    # Clear: back to the typed query alone
    page.click("#refine-clear")
    page.wait_for_selector("#refine", state="hidden")
    assert wait_for(page, [q], 30) == plain
    assert "like" not in parse_qs(urlparse(page.url).fragment)
    assert page.problems == [], page.problems


def test_a_bad_typed_query_says_why(page, served):  # noqa: F811
    page.goto(f"{served.url}/?token={TOKEN}")
    page.fill("#q", "beach +")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.getElementById('message').classList.contains('error')")
    assert "nothing after '+'" in page.inner_text("#message")
    assert _tiles(page) == 0
    assert json.dumps(page.problems).count("page error") == 0
