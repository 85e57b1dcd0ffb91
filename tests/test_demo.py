"""`pixquery demo` offline and then online, as a new user meets it (real subprocesses)."""

import json
import shutil

from clirun import pixquery
from photos import make_photos
from pixquery.encoders.registry import DEFAULT_MODEL, model_spec

FAKE_REVISION = "0" * 40


DEFAULT_REPO = model_spec(DEFAULT_MODEL).repo  # what the demo downloads


def _cache_as_hub_download(cache, model_dir, repo=DEFAULT_REPO):
    """Lay a model folder out as huggingface_hub's cache does after a download of `repo`."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(FAKE_REVISION)
    snapshot = root / "snapshots" / FAKE_REVISION
    shutil.copytree(
        model_dir, snapshot, ignore=shutil.ignore_patterns("*.safetensors", "*.int8.*", "*.ctx*", "*.opt.*")
    )
    config = json.loads((snapshot / "config.json").read_text())
    config.pop("random_weights", None)  # stands in for the real weights
    (snapshot / "config.json").write_text(json.dumps(config))


def test_demo_says_random_on_every_run_and_rebuilds_once_the_real_model_is_there(tmp_path, tiny_model, tiny_rn50):
    photos = tmp_path / "photos"
    make_photos(photos, 4)
    lib = tmp_path / "demo"
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    for _ in range(2):  # offline: the fallback, said every time, not only the first
        r = pixquery("demo", "--folder", photos, "-L", lib, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        assert "is not available" in r.stdout and "random-weight test model" in r.stdout
    info = json.loads(pixquery("info", "-L", lib, "--json").stdout)
    assert len(info["models"]) == 1 and info["model"].endswith("tiny-vit-b-32")
    # The real model can now be had (here: a cached download of another architecture): the demo
    # uses it, without the warning, and the library is rebuilt with it alone.
    _cache_as_hub_download(tmp_path / "hub", tiny_rn50)
    r = pixquery("demo", "--folder", photos, "-L", lib, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "random-weight" not in r.stdout
    assert f"rebuilding it with {DEFAULT_MODEL}" in r.stdout
    info = json.loads(pixquery("info", "-L", lib, "--json").stdout)
    assert info["model"] == DEFAULT_MODEL and len(info["models"]) == 1 and info["images"] == 4
    r = pixquery("demo", "--folder", photos, "-L", lib, env=env)  # and stays so
    assert "rebuilding" not in r.stdout and "indexed 0" in r.stdout


def test_demo_never_deletes_a_library_it_did_not_make(tmp_path, tiny_model, tiny_rn50):
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    lib = tmp_path / "mine"
    assert pixquery("index", photos, "-L", lib, "-m", tiny_model).returncode == 0
    r = pixquery("demo", "--folder", photos, "-L", lib, "-m", tiny_rn50)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rebuilding" not in r.stdout
    assert len(json.loads(pixquery("info", "-L", lib, "--json").stdout)["models"]) == 2
