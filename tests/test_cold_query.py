"""A cold `pixquery search`: the quick entry (no typer), lazy imports, the optional query daemon.

Real subprocesses and a real daemon process over the tiny model; the daemon's answers are compared
with searches in process, and a dead, hung, stale or foreign daemon must never change a result.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clirun import pixquery
from photos import make_photos

QUERY = "a red sports car"


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("cold")
    make_photos(root / "photos", 12)
    lib = root / "lib"
    r = pixquery("index", root / "photos", "-L", lib, "-m", tiny_model, "-q")
    assert r.returncode == 0, r.stderr
    return lib


def _search(lib, *args, env=None, importtime=False):
    prefix_env = dict(env or {})
    extra = ("-X", "importtime") if importtime else ()
    cmd = [sys.executable, *extra, "-m", "pixquery.cli", "search", *map(str, args), "-L", str(lib)]
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200", NO_COLOR="1", **prefix_env)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _same_results(a: list, b: list, tol: float = 1e-6) -> None:
    """Same photos in the same order with the same scores, up to `tol` (the daemon's text session
    pre-packs its weights, a one-shot search does not: ~1e-7 apart); hits whose scores are within
    `tol` of each other may trade places."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert abs(x["score"] - y["score"]) <= tol
    assert {r["path"]: r["score"] for r in a}.keys() == {r["path"]: r["score"] for r in b}.keys()
    for x, y in zip(a, b):
        if x["path"] != y["path"]:
            assert abs(x["score"] - y["score"]) <= tol


# -- tokenizer: ftfy is skipped only where it changes nothing ----------------------------------------
def test_ftfy_is_skipped_only_for_text_it_leaves_alone():
    from ftfy import fix_text

    from pixquery.encoders.tokenizer import _unchanged_by_ftfy

    rng = random.Random(0)
    skipped = 0
    for _ in range(20000):
        text = "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 30)))
        if _unchanged_by_ftfy(text):
            skipped += 1
            assert fix_text(text) == text, repr(text)
    assert skipped > 5000
    for text in ("caf\u00e9", "a &amp; b", "tab\there", "\x1b[31mred", "don\u2019t", "\uff41"):
        assert not _unchanged_by_ftfy(text)


def test_token_ids_are_the_same_with_and_without_the_skip(tiny_model, monkeypatch):
    import pixquery.encoders.tokenizer as tok
    from pixquery.encoders.onnx import OnnxClipEncoder

    texts = ["a dog", "A photo of a DOG, on a beach!", "x" * 300, "it's 5 o'clock", "<b>bold</b> `code` {x: 1}"]
    enc = OnnxClipEncoder(tiny_model)
    fast = enc.tokenize(texts)
    monkeypatch.setattr(tok, "_unchanged_by_ftfy", lambda text: False)
    assert (enc.tokenize(texts) == fast).all()


# -- the quick entry parses as typer does -------------------------------------------------------------
ARGVS = [
    [QUERY],
    [QUERY, "-k", "3"],
    ["-k", "3", QUERY],
    ["--top=4", QUERY],
    ["-k5", QUERY],
    [QUERY, "--json"],
    [QUERY, "-L", "/tmp/x"],
    [QUERY, "--library=/tmp/y"],
    ["-L/tmp/z", QUERY],
    [QUERY, "-m", "m1", "--model", "m2"],
    [QUERY, "--threshold", "0.4"],
    [QUERY, "--threshold=auto", "--json", "-k", "1"],
    ["--", "-a dash"],
    [QUERY, "-k", "-2"],
    ["-k", "+7", QUERY],
    [QUERY, "--text-only"],
    ["--semantic-only", QUERY, "--json"],
    [QUERY, "--add", "sunset", "--subtract", "people", "--add=dog"],
    ["--subtract", "-x", "--", "a +b -c"],
]
DEFERRED = [
    [],
    [QUERY, "x"],
    [QUERY, "--image", "a.jpg"],
    ["--image", "a.jpg"],
    [QUERY, "-k", "three"],
    [QUERY, "-h"],
    [QUERY, "--help"],
    [QUERY, "--jsn"],
    [QUERY, "--json=1"],
    [QUERY, "--text-only=1"],
    [QUERY, "-k"],
    ["-x"],
    [QUERY, "-i", "a.jpg"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_quick_parser_reads_what_typer_reads(argv, monkeypatch):
    import typer.main

    from pixquery.cli import app
    from pixquery.launch import parse_search

    monkeypatch.delenv("PIXQUERY_LIBRARY", raising=False)
    group = typer.main.get_command(app)
    ctx = group.make_context("pixquery", ["search", *argv])
    command = group.get_command(ctx, "search")
    params = command.make_context("search", list(argv), parent=ctx).params
    assert parse_search(argv) == params


@pytest.mark.parametrize("argv", DEFERRED, ids=" ".join)
def test_quick_parser_leaves_anything_else_to_typer(argv):
    from pixquery.launch import parse_search

    assert parse_search(argv) is None


def test_library_from_the_environment(monkeypatch):
    from pixquery.launch import parse_search

    monkeypatch.setenv("PIXQUERY_LIBRARY", "/tmp/from-env")
    assert parse_search([QUERY])["library"] == Path("/tmp/from-env")
    assert parse_search([QUERY, "-L", "/tmp/given"])["library"] == Path("/tmp/given")


# -- in process: same output as the full command line, fewer imports --------------------------------
@pytest.mark.parametrize(
    "args",
    [
        [QUERY, "-k", "4"],
        [QUERY, "-k", "4", "--json"],
        [QUERY, "--threshold", "0.49", "--json"],
        [QUERY, "--threshold", "2"],
        [" "],
        [QUERY, "-m", "no-such-model"],
    ],
)
def test_quick_search_prints_what_the_full_cli_prints(library, args):
    quick = _search(library, *args, env={"PIXQUERY_NO_DAEMON": "1"})
    full = _search(library, *args, env={"PIXQUERY_NO_DAEMON": "1", "PIXQUERY_FULL_CLI": "1"})
    ms = re.compile(r" in \d+ ms")
    assert (quick.returncode, quick.stdout, ms.sub("", quick.stderr)) == (
        full.returncode,
        full.stdout,
        ms.sub("", full.stderr),
    )


def test_quick_search_imports_no_typer_no_pil_no_ingest(library):
    r = _search(library, QUERY, "-k", "3", importtime=True, env={"PIXQUERY_NO_DAEMON": "1"})
    assert r.returncode == 0, r.stderr
    mods = _imported(r.stderr)
    assert "onnxruntime" in mods and "numpy" in mods  # it did search in process
    assert (
        not {
            "typer",
            "rich",
            "PIL",
            "ftfy",
            "tokenizers",
            "fastapi",
            "torch",
            "pixquery.ingest.pipeline",
            "multiprocessing",
            "pixquery.daemon",
        }
        & mods
    )
    assert len(r.stdout.splitlines()) == 3


def test_no_library_is_one_line_and_creates_nothing(tmp_path):
    r = _search(tmp_path / "nothing", QUERY)
    assert r.returncode == 2 and r.stderr.startswith("error: no library at ") and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "nothing").exists()


# -- the daemon -------------------------------------------------------------------------------------------
class Daemon:
    def __init__(self, lib, *args, env=None):
        self.lib = lib
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pixquery.cli", "daemon", "-L", str(lib), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any("answering searches" in line for line in self.lines):
                return self
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited: " + "".join(self.lines))
            time.sleep(0.05)
        raise AssertionError("daemon not ready: " + "".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def daemon(library):
    started = []

    def start(*args, lib=None, env=None):
        d = Daemon(lib or library, *args, env=env).wait_ready()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _results(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["results"]


def test_daemon_answers_with_the_same_results(library, daemon):
    in_process = _results(_search(library, QUERY, "-k", "6", "--json", env={"PIXQUERY_NO_DAEMON": "1"}))
    d = daemon()
    assert (library / "query.sock").exists() and (library / "query.sock").stat().st_mode & 0o777 == 0o600
    r = _search(library, QUERY, "-k", "6", "--json", importtime=True)
    mods = _imported(r.stderr)
    assert "onnxruntime" not in mods and "numpy" not in mods and "typer" not in mods  # answered by the daemon
    _same_results(json.loads(r.stdout)["results"], in_process)
    # plain lines, the threshold, and a user error come back as they would in process
    for args in (
        [QUERY, "-k", "4"],
        [QUERY, "--threshold", "0.49", "--json"],
        [QUERY, "--threshold", "2"],
        [" "],
        ["beach +sunset -people", "--json"],
        ["beach", "--add", "sunset", "--subtract", "people", "--json"],
        ["beach +"],
    ):  # combined queries reach the daemon in the inline syntax
        via = _search(library, *args)
        local = _search(library, *args, env={"PIXQUERY_NO_DAEMON": "1"})
        assert via.returncode == local.returncode
        if "--json" in args:
            a, b = json.loads(via.stdout), json.loads(local.stdout)
            _same_results(a.pop("results"), b.pop("results"))
            assert a == b
        else:
            assert via.stdout.count("\n") == local.stdout.count("\n")
            assert [line.split("\t")[3] for line in via.stdout.splitlines()] == [
                line.split("\t")[3] for line in local.stdout.splitlines()
            ] or via.returncode
            assert via.stderr.split(" results in ")[0] == local.stderr.split(" results in ")[0]
    assert d.proc.poll() is None


def test_a_dead_daemon_falls_back_at_once(library, daemon):
    expected = _results(_search(library, QUERY, "--json", env={"PIXQUERY_NO_DAEMON": "1"}))
    d = daemon()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    assert (library / "query.sock").exists()  # left behind by the killed daemon
    t0 = time.time()
    r = _search(library, QUERY, "--json", importtime=True)
    assert "onnxruntime" in _imported(r.stderr)  # searched in process
    assert json.loads(r.stdout)["results"] == expected
    assert time.time() - t0 < 60
    # a new daemon replaces the stale socket
    daemon()
    r = _search(library, QUERY, "--json", importtime=True)
    assert "onnxruntime" not in _imported(r.stderr)
    _same_results(json.loads(r.stdout)["results"], expected)


def test_a_hung_daemon_falls_back_after_the_timeout(library, daemon):
    expected = _results(_search(library, QUERY, "--json", env={"PIXQUERY_NO_DAEMON": "1"}))
    d = daemon()
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.time()
        r = _search(library, QUERY, "--json", env={"PIXQUERY_DAEMON_TIMEOUT": "1"})
        assert json.loads(r.stdout)["results"] == expected
        assert time.time() - t0 >= 1
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)


def test_the_daemon_follows_the_librarys_model(tmp_path, tiny_model, tiny_rn50, daemon):
    make_photos(tmp_path / "photos", 6)
    lib = tmp_path / "lib"
    assert pixquery("index", tmp_path / "photos", "-L", lib, "-m", tiny_model, "-q").returncode == 0
    d = daemon(lib=lib)
    # the library switches model (an index run with another model): the daemon loads it
    assert pixquery("index", "-L", lib, "-m", tiny_rn50, "-q").returncode == 0
    local = _results(_search(lib, QUERY, "--json", env={"PIXQUERY_NO_DAEMON": "1"}))
    r = _search(lib, QUERY, "--json", importtime=True)
    assert "onnxruntime" not in _imported(r.stderr)
    _same_results(json.loads(r.stdout)["results"], local)
    assert any("model changed" in line for line in d.lines)
    # a search for another model than the daemon's is done in process
    other = _results(_search(lib, QUERY, "--json", "-m", tiny_model, env={"PIXQUERY_NO_DAEMON": "1"}))
    r = _search(lib, QUERY, "--json", "-m", tiny_model, importtime=True)
    assert "onnxruntime" in _imported(r.stderr)
    assert json.loads(r.stdout)["results"] == other
    d.stop()
    # a daemon started with --model M answers for M only, whatever the library's model is
    daemon("-m", tiny_model, lib=lib)
    r = _search(lib, QUERY, "--json", "-m", tiny_model, importtime=True)
    assert "onnxruntime" not in _imported(r.stderr)
    _same_results(json.loads(r.stdout)["results"], other)
    r = _search(lib, QUERY, "--json", importtime=True)  # the library's model (rn50)
    assert "onnxruntime" in _imported(r.stderr)
    assert json.loads(r.stdout)["results"] == local


def test_one_daemon_per_library_and_stop(library, daemon):
    d = daemon()
    second = subprocess.run(
        [sys.executable, "-m", "pixquery.cli", "daemon", "-L", str(library)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, NO_COLOR="1"),
    )
    assert second.returncode == 2 and "already answers" in second.stderr
    assert (library / "query.sock").exists()  # the second one did not take the first one's socket
    r = subprocess.run(
        [sys.executable, "-m", "pixquery.cli", "daemon", "-L", str(library), "--stop"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert d.proc.wait(timeout=30) == 0
    assert not (library / "query.sock").exists()
    r = subprocess.run(
        [sys.executable, "-m", "pixquery.cli", "daemon", "-L", str(library), "--stop"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, NO_COLOR="1"),
    )
    assert r.returncode == 2 and "no pixquery daemon" in r.stderr


# -- the client against fake daemons --------------------------------------------------------------
def _fake_daemon(path: Path, reply: bytes | None):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if reply is not None:
                    conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return srv


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\n",
        b"[1, 2]\n",
        b'{"v": 99, "ok": true}\n',
        b"",
        b'{"v": 1, "ok": false}\n',
        b'{"v": 1, "ok": true, "results": [{"rank": 1}], "locations": []}\n',
    ],
)
def test_a_foreign_or_broken_daemon_is_ignored(library, reply):
    expected = _results(_search(library, QUERY, "--json", env={"PIXQUERY_NO_DAEMON": "1"}))
    srv = _fake_daemon(library / "query.sock", reply)
    try:
        r = _search(library, QUERY, "--json")
        assert json.loads(r.stdout)["results"] == expected
    finally:
        srv.close()
        (library / "query.sock").unlink()


def test_answer_refuses_another_library(library):
    from pixquery.daemon import PROTOCOL, QueryDaemon

    d = QueryDaemon(library)
    d.open()
    try:
        base = {"v": PROTOCOL, "op": "search", "query": QUERY, "k": 3, "threshold": None, "model": None}
        assert d.answer(dict(base, library=str(library.parent)))["ok"] is False
        assert d.answer(dict(base, library=str(library), v=PROTOCOL + 1))["ok"] is False
        ok = d.answer(dict(base, library=str(library)))
        assert ok["ok"] and len(ok["results"]) == 3 == len(ok["locations"])
    finally:
        d.close()


def test_a_long_library_path_gets_a_private_runtime_socket(tmp_path, monkeypatch):
    from pixquery import daemon

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    path = daemon.socket_path(deep)
    assert path.parent == tmp_path / "run" and path.name.endswith(".sock")
    assert (
        daemon.socket_path(deep) == path
        and daemon.socket_path(tmp_path / "lib") == (tmp_path / "lib" / "query.sock").resolve()
    )
    assert daemon.ask(deep, {"op": "ping"}) is None  # nothing there: no error, no wait


# -- tokenizer: plain ASCII in pure Python, same ids as `tokenizers` ---------------------------------
def _fuzz_texts(n=3000, seed=1):
    rng = random.Random(seed)
    words = [
        "a",
        "an",
        "the",
        "dog",
        "dogs",
        "cat's",
        "photo",
        "of",
        "on",
        "at",
        "beach",
        "sunset",
        "red",
        "sports",
        "car",
        "2024",
        "1999",
        "o'clock",
        "don't",
        "we're",
        "you've",
        "i'm",
        "they'll",
        "he'd",
        "it's",
        "x-ray",
        "e-mail",
        "#tag",
        "@user",
        "$5",
        "50%",
        "(a)",
        "[b]",
        "{c}",
        "<d>",
        "...",
        "!!",
        "??",
        "--",
        "__",
        "==",
        "++",
        "**",
        "~~",
        "``",
        "\\",
        "/",
        "|",
        ";",
        ":",
        ",",
        ".",
        "aaaa",
        "zzzz",
        "qqq",
        "supercalifragilisticexpialidocious",
        "3.14",
        "1,000",
        "hello_world",
        "CamelCase",
        "ALLCAPS",
        "<start_of_text>",
        "<end_of_text>",
        "<|startoftext|>",
        "<|endoftext|>",
        "'s",
        "'t",
        "'re",
        "&amp;",
        "café",
        "日本",
    ]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(n)]
    texts += ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40))) for _ in range(n)]
    return texts + ["word " * 100, "x" * 500, "", "   "]


def _compare_tokenizers(tokenizer_json, tmp_path):
    from pixquery.encoders.tokenizer import ClipTokenizer

    fast = ClipTokenizer(tokenizer_json, cache_dir=tmp_path / "cache")
    slow = ClipTokenizer(tokenizer_json, fast=False)
    texts = _fuzz_texts()
    assert (fast(texts) == slow(texts)).all()
    from pixquery.encoders.tokenizer import clean_text

    used = sum(fast._fast.ids(clean_text(t)) is not None for t in texts)
    assert used > len(texts) * 0.6  # the pure Python path did most of them
    return fast


def test_fast_bpe_gives_the_ids_of_tokenizers(tiny_model, tmp_path):
    fast = _compare_tokenizers(tiny_model / "textual" / "tokenizer.json", tmp_path)
    assert fast._tok_obj is not None  # non-ASCII and special-token texts went to `tokenizers`
    only_ascii = type(fast)(tiny_model / "textual" / "tokenizer.json")
    only_ascii(["a dog on a beach", "A Photo of 3 CATS!"])
    assert only_ascii._tok_obj is None  # `tokenizers` never loaded


def test_fast_bpe_reads_hugging_faces_clip_layout(tiny_model, tmp_path):
    """The layout of Hugging Face's CLIP tokenizer.json (immich's models): other special tokens and
    split pattern, a RobertaProcessing post-processor, merges as strings."""
    d = json.loads((tiny_model / "textual" / "tokenizer.json").read_text())
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = d["model"]["vocab"]
    for old, new in rename.items():
        vocab[new] = vocab.pop(old)
    for t in d["added_tokens"]:
        t["content"] = rename[t["content"]]
    d["model"]["unk_token"] = "<|endoftext|>"
    d["model"]["continuing_subword_prefix"] = ""
    d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
    split = d["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    split["Regex"] = split["Regex"].replace("<start_of_text>|<end_of_text>", r"<\|startoftext\|>|<\|endoftext\|>")
    d["post_processor"] = {
        "type": "RobertaProcessing",
        "sep": ["<|endoftext|>", vocab["<|endoftext|>"]],
        "cls": ["<|startoftext|>", vocab["<|startoftext|>"]],
        "trim_offsets": False,
        "add_prefix_space": False,
    }
    hf = tmp_path / "hf" / "textual" / "tokenizer.json"
    hf.parent.mkdir(parents=True)
    hf.write_text(json.dumps(d))
    _compare_tokenizers(hf, tmp_path)


def test_fast_bpe_copy_damaged_is_made_again_and_another_layout_is_left_alone(tiny_model, tmp_path):
    import shutil

    from pixquery.encoders.fast_bpe import _paths
    from pixquery.encoders.tokenizer import ClipTokenizer

    tj = tmp_path / "m" / "textual" / "tokenizer.json"
    tj.parent.mkdir(parents=True)
    shutil.copy(tiny_model / "textual" / "tokenizer.json", tj)
    texts = ["a dog on a beach", "it's 5 o'clock", "x" * 300]
    expected = ClipTokenizer(tj, fast=False)(texts)
    assert (ClipTokenizer(tj)(texts) == expected).all()
    copy = _paths(tj, None)[0]
    good = copy.read_bytes()
    for damage in (
        b"",
        good[: len(good) // 2],
        good[:-10] + b"0123456789",
        b"garbage\n" + good,
        good.split(b"\n", 1)[0] + b"\nN",
    ):  # a "not for this layout" body with another file's checksum
        copy.write_bytes(damage)
        tok = ClipTokenizer(tj)
        assert (tok(texts) == expected).all()
        assert tok._fast and copy.read_bytes() == good  # made again
    # a tokenizer.json of another layout: `tokenizers` does it all, remembered once
    d = json.loads(tj.read_text())
    d["normalizer"] = {"type": "NFKC"}
    other = tmp_path / "o" / "textual" / "tokenizer.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps(d))
    tok = ClipTokenizer(other)
    assert (tok(texts) == ClipTokenizer(other, fast=False)(texts)).all() and tok._fast is False
    assert _paths(other, None)[0].exists()
