"""The README's `pip install` without extras, in a fresh venv: every command in `--help` works.

Slow (a venv and an install, ~40 s with the wheels at hand), but it is the only test that sees
what a user without the dev extras has: no torch, no annoy/hnswlib, no playwright.
"""

import os
import subprocess
import venv
from pathlib import Path

import pytest

from photos import make_photos

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("plain") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-cache-dir", str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode != 0 and "No matching distribution" in r.stderr + r.stdout:
        pytest.skip(f"the package registry is not reachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    return env_dir / "bin"


def _run(bin_dir, *args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200", NO_COLOR="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(bin_dir / "pixquery"), *map(str, args)], capture_output=True, text=True, env=env, timeout=300, **kw
    )


# Every command path of the installed CLI, read from its click tree (so a command added later is
# covered without editing this list): one line each, words separated by spaces; "" is the top level.
_COMMANDS = """
import typer.main
from pixquery.cli import app

def walk(cmd, path):
    print(" ".join(path))
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            walk(sub, path + [name])

walk(typer.main.get_command(app), [])
"""


def command_paths(bin_dir) -> list[list[str]]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(bin_dir / "python"), "-c", _COMMANDS], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return [line.split() for line in r.stdout.splitlines()]


@pytest.mark.slow
def test_every_command_works_after_a_plain_install(plain, tmp_path, tiny_model):
    paths = command_paths(plain)
    names = {" ".join(p) for p in paths}
    # the walk found the tree: the top level, the commands the README lists, and nested ones
    assert {
        "",
        "index",
        "search",
        "info",
        "models",
        "reindex",
        "demo",
        "export",
        "serve",
        "eval",
        "daemon",
        "video",
        "video info",
    } <= names, names
    top = _run(plain, "--help")
    assert top.returncode == 0, top.stderr
    for path in paths:
        if len(path) == 1:  # what the tree says is what `--help` lists
            assert f"\n  {path[0]} " in top.stdout, (path, top.stdout)
        r = _run(plain, *path, "--help")
        # a missing optional import would show as a traceback here, not as a user's bug report
        assert r.returncode == 0 and "Traceback" not in r.stderr, (path, r.stderr)
        assert r.stdout.startswith("Usage: pixquery" + "".join(" " + w for w in path)), (path, r.stdout[:200])
    # the features behind serve, video and eval import (no extra needed)
    check = subprocess.run(
        [
            str(plain / "python"),
            "-c",
            "import pixquery.server.app, pixquery.evaluation.plots, av, matplotlib, fastapi, uvicorn",
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    torch = subprocess.run([str(plain / "python"), "-c", "import torch"], capture_output=True)
    assert torch.returncode != 0  # the default runtime has no torch
    # the real job: index and search with the runtime alone
    photos = tmp_path / "photos"
    make_photos(photos, 4)
    lib = tmp_path / "lib"
    r = _run(plain, "index", photos, "-L", lib, "-m", tiny_model)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(plain, "search", "a dog", "-L", lib, "-k", "2")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 2, r.stdout + r.stderr
    # the built-in demo (its own library, example queries) with the tiny model named
    r = _run(plain, "demo", "--folder", photos, "-L", tmp_path / "demo", "-m", tiny_model)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert str(photos) in r.stdout, r.stdout
    # an index kind whose library is an extra says so before any work, in one line
    r = _run(plain, "index", photos, "-L", tmp_path / "lib2", "-m", tiny_model, "--index", "hnsw")
    assert r.returncode == 2 and "pixquery[ann]" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    catalog = tmp_path / "lib2" / "catalog.sqlite"
    if catalog.exists():  # nothing was embedded before the error
        import sqlite3

        assert sqlite3.connect(catalog).execute("SELECT COUNT(*) FROM embedding").fetchone()[0] == 0


@pytest.mark.slow
def test_a_plain_install_reads_heic_and_names_the_extra_for_raw(plain, tmp_path, tiny_model):
    """HEIC (iPhones) works on the default install; camera RAW needs the [formats] extra, and a
    RAW file found without it is reported, with the command, not skipped silently."""
    from photo_formats import heic

    raw_missing = subprocess.run([str(plain / "python"), "-c", "import rawpy"], capture_output=True)
    assert raw_missing.returncode != 0  # rawpy is the [formats] extra, not a default dependency
    photos = tmp_path / "phone"
    make_photos(photos, 1)
    heic(photos / "iphone.heic", seed=7)
    (photos / "camera.dng").write_bytes(b"II*\x00" + b"\x00" * 100)  # never opened without rawpy
    r = _run(plain, "index", photos, "-L", tmp_path / "lib", "-m", tiny_model)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "indexed 2" in r.stdout  # the JPEG and the HEIC
    assert "1 camera RAW file not indexed" in r.stdout
    assert "rawpy is not installed: pip install 'pixquery[formats]'" in r.stdout
    r = _run(plain, "search", "--image", photos / "iphone.heic", "-L", tmp_path / "lib", "-k", "1")
    assert r.returncode == 0 and str(photos / "iphone.heic") in r.stdout, r.stdout + r.stderr
