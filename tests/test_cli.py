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
    assert out["failed"] == [{"path": str(photos / "broken.jpg"), "reason": out["failed"][0]["reason"], "new": True}]


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
    r = pixquery(
        "index",
        photos,
        "-L",
        tmp_path / "lib",
        "-m",
        "ViT-B-32",
        env={"HF_HOME": str(tmp_path / "empty-hf-cache"), "HF_HUB_OFFLINE": "1"},
    )
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
    cfg.write_text(
        f'[model]\nname = "{tiny_model}"\n[index]\nkind = "flat"\nstorage = "float16"\n[ingest]\nbatch_size = 4\n'
    )
    r = pixquery("index", photos, "-L", tmp_path / "lib", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(pixquery("info", "-L", tmp_path / "lib", "--json").stdout)
    assert info["models"][0]["index"]["params"]["storage"] == "float16"


def test_demo_runs_on_a_folder(tmp_path, tiny_model, photos):
    r = pixquery("demo", "--folder", photos, "-L", tmp_path / "demo", "-m", tiny_model)
    assert r.returncode == 0, r.stderr
    assert "indexed 8" in r.stdout and "a dog" in r.stdout


# -- usage errors, --version, -h, Ctrl-C (issue 11 item 6) ----------------------------------------


def _clean(r):
    """No traceback anywhere: a user error is a few lines, not 40."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert len(out.splitlines()) < 60, out
    return out


def test_bare_pixquery_shows_usage():
    r = pixquery()
    out = _clean(r)
    assert r.returncode == 2 and "Usage: pixquery" in out and "search" in out


def test_help_and_h_and_version():
    from pixquery import __version__

    for flag in ("--help", "-h"):
        r = pixquery(flag)
        _clean(r)
        assert r.returncode == 0 and "Usage: pixquery" in r.stdout and "Exit codes" in r.stdout
    r = pixquery("search", "-h")
    assert r.returncode == 0 and "--top" in r.stdout, r.stderr
    r = pixquery("--version")
    _clean(r)
    assert r.returncode == 0 and r.stdout.strip() == f"pixquery {__version__}"


@pytest.mark.parametrize(
    "args, message",
    [
        (("serch", "x"), "No such command 'serch'"),
        (("search", "x", "-k", "abc"), "'-k'"),
        (("index", "--bogus"), "No such option: --bogus"),
    ],
)
def test_usage_errors_are_short(args, message):
    r = pixquery(*args)
    out = _clean(r)
    assert r.returncode == 2 and message in out and "pixquery" in out


def test_ctrl_c_says_how_to_resume(tmp_path, tiny_model):
    import signal
    import sys
    import time

    from pixquery.api import STATUS_FILE

    make_photos(tmp_path / "many", 400, size=(640, 480))
    lib = tmp_path / "lib"
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200", NO_COLOR="1")
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pixquery.cli",
                "index",
                str(tmp_path / "many"),
                "-L",
                str(lib),
                "-m",
                str(tiny_model),
                "--batch-size",
                "4",
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=err,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while not (lib / STATUS_FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the status file appears once the run has the library

        def embedded() -> int:
            try:
                return json.loads((lib / STATUS_FILE).read_text()).get("done", 0)
            except (OSError, ValueError):
                return 0

        while embedded() < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # interrupt in the middle of embedding, as a user does
        assert proc.poll() is None, "index finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (tmp_path / "err").read_text()
    assert "Traceback" not in stderr, stderr
    assert rc == 130, stderr
    assert "interrupted" in stderr and "run the same command to resume" in stderr


# -- piped output (issue 11 item 7) -----------------------------------------------------------------


def test_piped_search_and_info_are_plain_lines(tmp_path, tiny_model):
    folder = tmp_path / ("Holiday photos from the summer " + "with a very long folder name " * 5)
    paths = make_photos(folder, 6)
    for i, p in enumerate(paths):  # long names with spaces, as real photo folders have
        p.rename(p.with_name(f"IMG {i:04d} taken at the beach in the evening light.jpg"))
    lib = tmp_path / "lib"
    assert pixquery("index", folder, "-L", lib, "-m", tiny_model).returncode == 0
    on_disk = {str(p) for p in folder.glob("*.jpg")}
    assert min(map(len, on_disk)) > 120 and all(" " in p for p in on_disk)

    for columns in ("80", "200"):
        r = pixquery("search", "a beach", "-L", lib, "-k", "4", env={"COLUMNS": columns})
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 4  # one result a line, no header, nothing wrapped
        for rank, line in enumerate(lines, 1):
            fields = line.split("\t")
            assert len(fields) == 4 and fields[0] == str(rank), line
            float(fields[1]), float(fields[2])
            assert fields[3] in on_disk  # the whole path, as `cut -f4` gives it
            assert line == line.strip()  # no padding
    r = pixquery("search", "a beach", "-L", lib, "--json")  # --json unchanged
    assert {x["path"] for x in json.loads(r.stdout)["results"]} == on_disk

    r = pixquery("info", "-L", lib, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert all(len(row) == 2 for row in rows), r.stdout
    info = dict(rows)
    assert info["library"] == str(lib) and info["folder"] == str(folder) and info["images"] == "6"
    assert info["models.0.index.kind"] == "auto" and info["models.0.index.entries"] == "6"

    # `| head` and `| cut -f4 | xargs` work in a real shell pipeline
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1")
    import sys

    cmd = f"{sys.executable} -m pixquery.cli search 'a beach' -L '{lib}' -k 6"
    out = subprocess.run(
        f"{cmd} | cut -f4 | xargs -d '\\n' ls -1d", shell=True, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and set(out.stdout.splitlines()) == on_disk, out.stderr
    out = subprocess.run(
        f"set -o pipefail; {cmd} | head -1", shell=True, capture_output=True, text=True, env=env, executable="/bin/bash"
    )
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr


# -- a mistyped library path (issue 11 item 10) ------------------------------------------------------


@pytest.mark.parametrize("command", [("search", "a dog"), ("info",), ("reindex",), ("search", "--image", "x.jpg")])
def test_no_library_there_is_one_line_and_creates_nothing(tmp_path, command):
    missing = tmp_path / "Librray"
    # a model that does not exist: the library is looked at before any model is loaded
    r = pixquery(*command, "-L", missing, "-m", tmp_path / "no-such-model")
    _clean(r)
    assert r.returncode == 2, r.stderr
    assert f"no library at {missing}" in r.stderr
    assert "model folder not found" not in r.stderr
    assert not missing.exists()  # no catalog made there


# -- export: no silent random weights, fast offline failure (issue 11 item 11) -----------------------


def test_export_needs_weights(tmp_path):
    r = pixquery("export", "ViT-B-32", tmp_path / "out")
    _clean(r)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--pretrained TAG" in r.stderr and "--checkpoint FILE" in r.stderr and "--random" in r.stderr
    assert not (tmp_path / "out").exists()
    r = pixquery("export", "ViT-B-32", tmp_path / "out", "--pretrained", "openai", "--random")
    assert r.returncode == 2 and "--pretrained and --random" in r.stderr


def test_export_random_says_so(tmp_path, tiny_model):
    out = tmp_path / "out"
    shutil.copytree(tiny_model, out)  # a complete export is kept as it is: no torch work in this test
    r = pixquery("export", "ViT-B-32", out, "--random")
    assert r.returncode == 0, r.stderr
    assert "RANDOM" in r.stdout and "meaningless" in r.stdout


def test_export_offline_fails_fast(tmp_path):
    import time

    pytest.importorskip("open_clip")
    t0 = time.monotonic()
    r = pixquery(
        "export",
        "ViT-B-32",
        tmp_path / "out",
        "--pretrained",
        "openai",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path)},
    )
    _clean(r)
    assert r.returncode == 2, r.stderr
    assert "not cached" in r.stderr and "HF_HUB_OFFLINE is set" in r.stderr and "--checkpoint FILE" in r.stderr
    assert time.monotonic() - t0 < 60  # torch's import, not minutes of download retries
    assert not (tmp_path / "out").exists()


def test_export_without_network_fails_fast(tmp_path):
    import time

    pytest.importorskip("open_clip")
    t0 = time.monotonic()  # HF_ENDPOINT: a host that never resolves (.invalid), so no real download is tried
    r = pixquery(
        "export",
        "ViT-B-32",
        tmp_path / "out",
        "--pretrained",
        "laion2b_s34b_b79k",
        env={
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": "https://hub.invalid",
            "HF_HOME": str(tmp_path / "hf"),
            "HOME": str(tmp_path),
            "HTTPS_PROXY": "",
            "https_proxy": "",
            "ALL_PROXY": "",
            "all_proxy": "",
        },
    )
    _clean(r)
    assert r.returncode == 2, r.stderr
    assert "cannot reach hub.invalid" in r.stderr and "--checkpoint FILE" in r.stderr
    assert time.monotonic() - t0 < 45  # was about 65 s of download retries


# -- help texts and exit codes (issue 11 item 13) ------------------------------------------------------

COMMANDS = [
    "index",
    "search",
    "info",
    "models",
    "reindex",
    "demo",
    "export",
    "eval",
    "serve",
    "daemon",
    "video",
    "video info",
    "video frames",
    "video frame",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_is_plain_and_complete(command):
    import re

    r = pixquery(*command.split(), "--help", env={"COLUMNS": "300"})
    out = _clean(r)
    assert r.returncode == 0 and f"Usage: pixquery {command} " in r.stdout, out
    assert "<bool>" not in out  # typer's type column noise
    assert not re.search(r"\{\w+\}", out), out  # {dataset}: typer's notation for a required argument
    assert "[OPTIONS]" in out  # square brackets survive (no Rich markup)
    usage = r.stdout.split("\n\n")[0]
    assert re.fullmatch(
        r"Usage: pixquery [a-z ]+\[OPTIONS\]( [A-Z\[\]. ]+)?( COMMAND \[ARGS\]\.\.\.)?", usage.strip()
    ), usage
    for line in r.stdout.splitlines():  # every option says what it does
        if re.match(r"^  -", line):
            name = re.match(r"^\s+(-[^ ]*(?:, -[^ ]*)?(?: / [^ ]+)?(?: [A-Z<][^ ]*)?)", line).group(1)
            assert len(line.strip()) > len(name) + 2, f"{command}: {line!r} has no help"


def test_help_texts_keep_their_brackets():
    r = pixquery("export", "--help", env={"COLUMNS": "300"})
    assert "(needs pixquery[torch])" in " ".join(r.stdout.split())  # not 'needs pixquery'
    r = pixquery("--help", env={"COLUMNS": "300"})
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"  {code}" in r.stdout.split("Exit codes:")[1]
    r = pixquery("index", "--help", env={"COLUMNS": "300"})
    text = " ".join(r.stdout.split())  # help is wrapped at 80 columns
    assert "([model], [index], [ingest])" in text and "[default: one per core]" in text
    r = pixquery("search", "--help", env={"COLUMNS": "300"})
    assert "[default: $PIXQUERY_LIBRARY or ~/.local/share/pixquery]" in " ".join(r.stdout.split())
    r = pixquery("eval", "--help", env={"COLUMNS": "300"})
    assert "Usage: pixquery eval [OPTIONS] DATASET" in r.stdout and "[,label...]" in " ".join(r.stdout.split())


def test_exit_code_2_for_user_errors_everywhere(tmp_path):
    r = pixquery("eval", tmp_path / "no-such-dataset")
    _clean(r)
    assert r.returncode == 2 and "dataset not found" in r.stderr + r.stdout
    r = pixquery("video", "frame", tmp_path / "x.mp4", "soon", "-o", tmp_path / "x.png")
    _clean(r)
    assert r.returncode == 2 and "not a time" in r.stderr
