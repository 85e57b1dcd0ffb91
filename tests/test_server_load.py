"""The load test of the issue, bounded: 20 concurrent clients, 2,000 text queries, zero errors.

Runs against a real `pixquery serve` on 127.0.0.1 with the tiny test model, through the same
client as bench/serve_load.py (whose full run, with the full-size model, is in
bench/results/serve-load.md).
"""

from __future__ import annotations

import importlib.util

import pytest

from test_server_support import REPO, build_library, running_server

N_PHOTOS = 40


def _bench():
    spec = importlib.util.spec_from_file_location("serve_load", REPO / "bench" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_20_clients_2000_queries_zero_errors(tmp_path, tiny_model):
    import httpx

    bench = _bench()
    lib_path, _ = build_library(tmp_path, tiny_model, N_PHOTOS)
    answers: dict[str, list[str]] = {}
    with running_server(lib_path, tiny_model, tmp_path / "server.log") as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        queries = bench.query_mix("unique", 1000) + bench.query_mix("repeated", 1000)
        result = bench.run_load(
            server.url, headers, queries, clients=20, k=30, expect=30, time_limit=180, answers=answers
        )
        # Under load every query was answered as it is alone (a shared encoder or library object
        # misused by concurrent requests would answer some query with another's results).
        alone = {}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            for q in list(answers)[::50] + queries[-5:]:
                r = client.get("/api/search", params={"q": q, "k": 30})
                assert r.status_code == 200, r.text
                alone[q] = [x["path"] for x in r.json()["results"]]
    print(result)
    assert result["queries"] == 2000
    assert result["errors"] == 0, result["error_samples"]  # includes a query answered two ways under load
    assert result["ok"] == 2000
    assert len(answers) == len(set(queries))  # every distinct query was answered and recorded
    assert len(alone) >= 20 and all(answers[q] == paths for q, paths in alone.items())
    assert len({tuple(a) for a in answers.values()}) > 1  # the queries are not all answered alike
