"""The command line, run as a user runs it: real subprocesses, real files."""

import json
import os
import shutil
import subprocess

import pytest

from clirun import pixquery
from photos import make_photos, photo


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "Photos with spaces"
    make_photos(folder, 8)
    return folder


def test_index_search_info_json(photos, tmp_path, tiny_model):
    lib = tmp_path / "lib"
    r = pixquery("index", photos, "-L", lib, "-m", tiny_model)
    assert r.returncode == 0, r.stderr
    assert "indexed 8" in r.stdout and "failed 0" in r.stdout
    assert "img/s" in r.stderr  # the progress bar showed a rate
    r = pixquery("search", "a red sports car", "-L", lib, "-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["results"]) == 3
    first = out["results"][0]
    assert {"rank", "score", "distance", "path"} <= set(first) and os.path.exists(first["path"])
    r = pixquery("search", "a red sports car", "-L", lib, "-k", "3")
    assert r.returncode == 0 and first["path"] in r.stdout.replace("\n", "") or "Photos with" in r.stdout
    target = sorted(photos.glob("*.jpg"))[3]
    r = pixquery("search", "--image", target, "-L", lib, "--json")
    assert json.loads(r.stdout)["results"][0]["path"] == str(target)
    r = pixquery("info", "-L", lib, "--json")
    info = json.loads(r.stdout)
    assert info["images"] == 8 and info["models"][0]["index"]["entries"] == 8
    r = pixquery("info", "-L", lib)
    assert "flat" in r.stdout and "images" in r.stdout


def test_exit_code_says_something_failed(photos, tmp_path, tiny_model):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    r = pixquery("index", photos, "-L", tmp_path / "lib", "-m", tiny_model, "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["indexed"] == 8
    assert out["failed"] == [{"path": str(photos / "broken.jpg"), "reason": out["failed"][0]["reason"]}]


def test_unreadable_file_is_reported(photos, tmp_path, tiny_model):
    secret = photos / "secret.jpg"
    photo(seed=3).save(secret)
    os.chmod(secret, 0)
    prefix = ()
    if os.geteuid() == 0:
        # root reads any file; drop the capabilities that let it, as a normal user lacks them
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    r = pixquery("index", photos, "-L", tmp_path / "lib", "-m", tiny_model, "--json", prefix=prefix)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["indexed"] == 8
    assert out["failed"][0]["path"] == str(secret) and "ermission" in out["failed"][0]["reason"]


def test_offline_missing_model_is_one_clear_error(tmp_path, photos):
    r = pixquery("index", photos, "-L", tmp_path / "lib", "-m", "ViT-B-32",
                 env={"HF_HOME": str(tmp_path / "empty-hf-cache"), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "ViT-B-32" in r.stderr and "immich-app" in r.stderr
    assert "--model" in r.stderr  # says how to point at a local copy


def test_usage_errors_are_clear(tmp_path, tiny_model):
    r = pixquery("search", "-L", tmp_path / "lib", "-m", tiny_model)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = pixquery("search", "x", "-L", tmp_path / "lib", "-m", tiny_model)
    assert r.returncode == 2 and "pixquery index" in r.stderr and "Traceback" not in r.stderr
    r = pixquery("index", tmp_path / "missing", "-L", tmp_path / "lib", "-m", tiny_model)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = pixquery("index", tmp_path, "-L", tmp_path / "lib", "-m", tiny_model, "--index", "nope")
    assert r.returncode == 2 and "unknown index kind" in r.stderr


def test_config_file(photos, tmp_path, tiny_model):
    cfg = tmp_path / "pixquery.toml"
    cfg.write_text(f'[model]\nname = "{tiny_model}"\n[index]\nkind = "flat"\nstorage = "float16"\n[ingest]\nbatch_size = 4\n')
    r = pixquery("index", photos, "-L", tmp_path / "lib", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(pixquery("info", "-L", tmp_path / "lib", "--json").stdout)
    assert info["models"][0]["index"]["params"]["storage"] == "float16"


def test_demo_runs_on_a_folder(tmp_path, tiny_model, photos):
    r = pixquery("demo", "--folder", photos, "-L", tmp_path / "demo", "-m", tiny_model)
    assert r.returncode == 0, r.stderr
    assert "indexed 8" in r.stdout and "a dog" in r.stdout
