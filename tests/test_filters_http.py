"""Filters over HTTP (GET /api/search's query parameters, documented in OpenAPI) and on the search
page (a date range, a folder picker, the order, a map link), against a real `pixquery serve` with
photos that carry real EXIF dates and GPS (written with Pillow); the page in a real Chromium
(tests/test_browser.py's harness)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from test_filters import EIFFEL, exif_jpeg
from test_server_support import TOKEN, running_server


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    from pixquery.api import Library

    root = tmp_path_factory.mktemp("filters-http")
    photos = root / "photos"
    # summer 2019 in Paris (beach/), winter 2019 (city/), 2021 (trip/): 8 + 8 + 8
    for i in range(8):
        exif_jpeg(
            photos / "beach" / f"b{i}.jpg",
            i,
            f"2019:0{6 + i % 3}:{10 + i} 12:00:00",
            "+02:00",
            EIFFEL,
            "Canon",
            "Canon EOS R",
        )
        exif_jpeg(photos / "city" / f"c{i}.jpg", 50 + i, f"2019:01:{10 + i} 09:00:00")
        exif_jpeg(photos / "trip" / f"t{i}.jpg", 90 + i, f"2021:05:{10 + i} 18:00:00")
    lib_path = root / "library"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        lib.index([str(photos / "beach"), str(photos / "city"), str(photos / "trip")], workers=1)
    # The page folds near-duplicates by default, and the tiny random model puts some of these
    # different photos closer than the default threshold (meant for real CLIP): no folding here.
    with running_server(lib_path, tiny_model, root / "server.log", extra=("--duplicate-threshold", "0")) as server:
        server.lib_path, server.photos = lib_path, photos
        yield server


@pytest.fixture(scope="module")
def api(served):
    with served.client() as client:
        yield client


def _names(page) -> set[str]:
    return {r["name"] for r in page["results"]}


def test_filters_as_query_parameters(api, served):
    r = api.get("/api/search", params={"q": "beach", "k": 50, "after": "2019-06", "before": "2019-09"})
    assert r.status_code == 200, r.text
    page = r.json()
    assert _names(page) == {f"b{i}.jpg" for i in range(8)}
    assert page["query"]["filters"] == {"after": "2019-06-01T00:00:00", "before": "2019-09-01T00:00:00"}
    hit = page["results"][0]
    assert hit["taken"].startswith("2019-0") and hit["taken_source"] == "exif" and hit["camera"] == "Canon EOS R"
    assert hit["lat"] == pytest.approx(EIFFEL[0], abs=1e-4)
    url = urlparse(hit["map"])
    assert url.netloc == "www.openstreetmap.org" and parse_qs(url.query)["mlat"] == [f"{hit['lat']:.6f}"]

    both = api.get(
        "/api/search",
        params=[("q", "x"), ("k", 50), ("in", str(served.photos / "city")), ("in", str(served.photos / "trip"))],
    ).json()
    assert _names(both) == {f"c{i}.jpg" for i in range(8)} | {f"t{i}.jpg" for i in range(8)}
    assert all(h["map"] is None for h in both["results"])
    # paging a filtered search: k per page, no repeats, all of them
    seen, offset = [], 0
    while offset is not None:
        page = api.get("/api/search", params={"q": "x", "k": 3, "offset": offset, "after": "2021"}).json()
        seen += [h["name"] for h in page["results"]]
        offset = page["next_offset"]
    assert sorted(seen) == sorted(f"t{i}.jpg" for i in range(8))
    # by date: oldest first
    dated = api.get("/api/search", params={"q": "x", "k": 50, "sort": "date"}).json()
    taken = [h["taken"] for h in dated["results"]]
    assert taken == sorted(taken) and len(taken) == 24 and dated["query"]["sort"] == "date"
    near = api.get("/api/search", params={"q": "x", "k": 50, "near": f"{EIFFEL[0]},{EIFFEL[1]}", "within": 1}).json()
    assert _names(near) == {f"b{i}.jpg" for i in range(8)}


def test_bad_filter_values_are_one_line_errors(api):
    for params, words in [
        ({"after": "yesterday"}, "after must be a date"),
        ({"near": "200,1"}, "latitude"),
        ({"after": "2020", "before": "2019"}, "must be earlier"),
        ({"within": "5"}, "within needs near"),
    ]:
        r = api.get("/api/search", params={"q": "x", **params})
        assert r.status_code == 422 and words in r.json()["error"], (params, r.text)
    assert api.get("/api/search", params={"q": "x", "type": "gif"}).status_code == 422
    assert api.get("/api/search", params={"q": "x", "sort": "size"}).status_code == 422


def test_openapi_documents_the_filters(api):
    schema = api.get("/api/openapi.json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/search"]["get"]["parameters"]}
    assert {"after", "before", "in", "type", "camera", "near", "within", "sort"} <= set(params)
    assert "2019-06" in params["after"]["description"]
    hit = schema["components"]["schemas"]["Hit"]["properties"]
    assert {"taken", "taken_source", "lat", "lon", "camera", "map"} <= set(hit)


# -- the page, in a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from test_browser import chromium

    with chromium() as b:
        yield b


def test_page_date_range_folder_and_map_link(browser, served):
    from test_browser import opened_page

    with opened_page(browser, 1100, 750) as page:
        page.goto(f"{served.url}/?token={TOKEN}")
        page.wait_for_function("() => document.getElementById('lib-images').textContent.includes('24')")
        # the folder picker lists the indexed folders
        options = page.eval_on_selector_all("#folder option", "os => os.map(o => o.value)")
        assert str(served.photos / "beach") in options and str(served.photos / "trip") in options
        page.fill("#q", "a beach")
        page.press("#q", "Enter")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 24")

        # a date range: summer 2019 (both ends inclusive days)
        page.fill("#after", "2019-06-01")
        page.dispatch_event("#after", "change")
        page.fill("#before", "2019-08-31")
        page.dispatch_event("#before", "change")
        page.wait_for_function(
            "() => document.querySelectorAll('#grid .tile').length === 8 && "
            "!document.getElementById('grid').hasAttribute('aria-busy')"
        )
        names = set(page.eval_on_selector_all("#grid .tile img", "els => els.map(e => e.alt)"))
        assert names == {f"b{i}.jpg" for i in range(8)}
        assert "from=2019-06-01" in page.url and "to=2019-08-31" in page.url
        assert "taken from 2019-06-01 to 2019-08-31" in page.inner_text("#message")

        # the viewer: date taken, camera, and a map link for a photo with GPS
        page.locator("#grid .tile").first.click()
        page.wait_for_selector("#viewer[open]")
        assert "(taken)" in page.inner_text("#v-date") and "2019" in page.inner_text("#v-date")
        assert page.inner_text("#v-camera") == "Canon EOS R"
        href = page.get_attribute("#v-map", "href")
        assert href.startswith("https://www.openstreetmap.org/?mlat=48.85")
        page.click("#v-close")

        # a folder and no dates: only that folder; order by date
        page.click("#clear-filters")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 24")
        page.select_option("#folder", str(served.photos / "trip"))
        page.select_option("#sort", "date")
        page.wait_for_function(
            "() => { const t = [...document.querySelectorAll('#grid .tile img')].map(e => e.alt);"
            " return t.length === 8 && t.every(n => n.startsWith('t')); }"
        )
        taken = page.eval_on_selector_all("#grid .tile", "els => els.map(e => e.dataset.taken)")
        assert taken == sorted(taken) and all(t.startswith("2021-05") for t in taken)
        # the filters survive a reload (they are in the URL)
        page.reload()
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 8")
        assert page.input_value("#folder") == str(served.photos / "trip") and page.input_value("#sort") == "date"
        assert not page.problems, page.problems
