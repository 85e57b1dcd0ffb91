"""`pixquery embed --engine ray` and `pixquery import` on a real Ray cluster (two node processes
on this machine), with real processes killed, and a real S3 API server (moto's, on 127.0.0.1).

Needs the [cluster-tests] extra (Ray Data, pyarrow, fsspec, s3fs, moto's S3 server, boto3);
skipped with that reason where they are missing. The cluster and the S3 server are started once
for the module and stopped at the end: only the processes they started are ended, by pid (never
`ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from clirun import pixquery
from conftest import REPO
from photos import BAD, awkward_files, make_photos

# Without ray, pyarrow, fsspec, s3fs, moto or boto3 the tests skip saying so (conftest: marker `ray`),
# and fail instead in CI, which installs them (PIXQUERY_TESTS_NEED).

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Cluster:
    """A Ray cluster of node processes on this machine; each node has its own temp folder, so
    its processes are found by their command lines (and only ours are ever signalled)."""

    def __init__(self, base: Path, env: dict):
        self.base, self.env = base, env
        self.address: str | None = None
        self.nodes: dict[str, Path] = {}

    def _start(self, name: str, head: bool) -> None:
        tmp = self.base / name
        tmp.mkdir()
        ports = _free_ports(8)
        cmd = [
            RAY,
            "start",
            "--num-cpus",
            "2",
            "--temp-dir",
            str(tmp),
            "--node-ip-address",
            "127.0.0.1",
            "--disable-usage-stats",
            "--object-store-memory",
            str(200 << 20),
            "--node-manager-port",
            str(ports[0]),
            "--object-manager-port",
            str(ports[1]),
            "--dashboard-agent-listen-port",
            str(ports[2]),
            "--dashboard-agent-grpc-port",
            str(ports[3]),
            "--runtime-env-agent-port",
            str(ports[4]),
            "--metrics-export-port",
            str(ports[5]),
        ]
        if head:
            cmd += ["--head", "--port", str(ports[6]), "--include-dashboard=false", "--dashboard-port", str(ports[7])]
        else:
            cmd += ["--address", self.address]
        self.nodes[name] = tmp
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        if head:
            self.address = f"127.0.0.1:{ports[6]}"

    def start(self) -> None:
        self._start("head", head=True)
        self._start("node1", head=False)
        self.wait_nodes(2)

    def wait_nodes(self, n: int, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                [sys.executable, "-c", _COUNT_NODES, self.address],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if out.returncode == 0 and int(out.stdout.split()[-1]) == n:
                return
            if time.monotonic() > end:
                raise TimeoutError(f"cluster has not {n} alive nodes: {out.stdout} {out.stderr[-2000:]}")
            time.sleep(1)

    def pids(self, name: str | None = None) -> list[int]:
        """Processes of one node (or of the whole cluster) and their children (its workers): the
        node's own processes name its folder on their command line."""
        marks = [str(self.nodes[name])] if name else [str(p) for p in self.nodes.values()]
        procs = _processes()
        found = {pid for pid, (_, cmdline) in procs.items() if any(m in cmdline for m in marks)}
        while True:
            more = {pid for pid, (ppid, _) in procs.items() if ppid in found} - found
            if not more:
                return sorted(found - {os.getpid()})
            found |= more

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of that node (raylet, agents, workers)."""
        victims = self.pids(name)
        _signal(victims, signal.SIGKILL)
        return victims

    def stop(self) -> None:
        victims = self.pids()
        _signal(victims, signal.SIGTERM)
        end = time.monotonic() + 3
        while time.monotonic() < end and any(_alive(p) for p in victims):
            time.sleep(0.2)
        _signal([p for p in victims if _alive(p)], signal.SIGKILL)


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can see (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(d.name)] = (ppid, cmdline)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _signal(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


_COUNT_NODES = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 API (moto's server, a separate process bound to 127.0.0.1) and a bucket."""
    port = _free_ports(1)[0]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_port(port)
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        }
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="photos-bucket")
        yield {"env": env, "client": client, "bucket": "photos-bucket"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def cluster(s3):
    """Two Ray node processes (2 logical CPUs each) started with `ray start`, with the environment
    a real cluster's nodes would have: this checkout on PYTHONPATH, credentials for the store."""
    base = Path(tempfile.mkdtemp(prefix="pxray", dir="/tmp"))  # short: Ray's socket paths have a limit
    token = base / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO / "src"),
        HF_HUB_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        **s3["env"],
    )
    env.pop("RAY_ADDRESS", None)
    c = Cluster(base, env)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)


def embed(cluster, *args, env=None, **kw):
    return pixquery("embed", *args, "--address", cluster.address, env={**cluster.env, **(env or {})}, **kw)


def _rows(library: Path) -> dict:
    """path -> (size, mtime_ns, sha256, width, height, embedding) of every live image."""
    from pixquery.catalog import Catalog

    cat = Catalog(library / "catalog.sqlite")
    try:
        (model,) = cat.models()
        out = {}
        for root in cat.folders() or ["/"]:
            for path, (image_id, _, _) in cat.images_under(root).items():
                r = cat.image(image_id)
                out[path] = (r.size, r.mtime_ns, r.sha256, r.width, r.height, cat.image_embedding(model.id, image_id))
        return out
    finally:
        cat.close()


def _shard_paths(out: Path | str) -> list[str]:
    from pixquery.ingest.shards import iter_shard_rows

    return [p for _, t in iter_shard_rows(str(out), ["path"]) for p in t.column("path").to_pylist()]


# -- the cluster itself -----------------------------------------------------------------------


def test_cluster_workers_run_this_checkout(cluster):
    """Both node processes are alive and their workers import pixquery from this checkout."""
    # Rounds of SPREAD tasks until both nodes answered (a node that just joined may get none of
    # the first round: seen once in CI).
    code = (
        "import sys, time, ray\n"
        "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
        "@ray.remote(num_cpus=1)\n"
        "def where():\n"
        "    import os, pixquery\n"
        "    time.sleep(0.2)\n"
        "    return pixquery.__file__, ray.get_runtime_context().get_node_id()\n"
        "seen = set()\n"
        "for _ in range(10):\n"
        "    seen |= set(ray.get([where.options(scheduling_strategy='SPREAD').remote() for _ in range(8)]))\n"
        "    if len({n for _, n in seen}) == 2:\n"
        "        break\n"
        "print(sorted(seen))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, cluster.address], env=cluster.env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = eval(out.stdout.strip().splitlines()[-1])
    assert {f for f, _ in seen} == {str(REPO / "src" / "pixquery" / "__init__.py")}
    assert len({node for _, node in seen}) == 2  # work went to both node processes


# -- local vs ray -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both_ways(cluster, tiny_model, tmp_path_factory):
    """The same folder (photos + every awkward file) through `pixquery index` and through
    `pixquery embed --engine ray` + `pixquery import`."""
    base = tmp_path_factory.mktemp("both")
    photos = base / "photos"
    make_photos(photos, 7)
    awkward = awkward_files(photos / "awkward")
    local = pixquery("index", photos, "-L", base / "local", "-m", tiny_model, "--json")
    out = base / "shards"
    ray = embed(cluster, photos, "--out", out, "-m", tiny_model, "--partition-size", "4", "--batch-size", "3", "--json")
    imp = pixquery("import", out, "-L", base / "ray", "--json")
    return {
        "base": base,
        "photos": photos,
        "awkward": awkward,
        "local": local,
        "ray": ray,
        "import": imp,
        "out": out,
        "model": tiny_model,
    }


def test_local_and_ray_give_the_same_library(both_ways):
    b = both_ways
    assert b["local"].returncode == 1, b["local"].stderr  # the bad files
    assert b["ray"].returncode == 1, b["ray"].stderr[-3000:]
    assert b["import"].returncode == 0, b["import"].stderr[-3000:]
    local, ray = _rows(b["base"] / "local"), _rows(b["base"] / "ray")
    good = 7 + len(b["awkward"]) - len(BAD)
    assert sorted(local) == sorted(ray) and len(local) == good
    for path in local:
        assert local[path][:5] == ray[path][:5], path  # size, mtime, sha256, width, height
    diff = max(float(np.max(np.abs(local[p][5] - ray[p][5]))) for p in local)
    assert diff <= 1e-6, diff
    # The same search results, in the same order, with the same scores.
    from pixquery import Library

    for query in ("a red sports car", "a dog", "sunset over the sea"):
        with Library.open(b["base"] / "local") as a, Library.open(b["base"] / "ray") as r:
            ra, rr = a.search(query, k=10), r.search(query, k=10)
        assert [x.path for x in ra] == [x.path for x in rr], query
        assert np.allclose([x.score for x in ra], [x.score for x in rr], atol=1e-5)
    # The CLI searches the imported library with the shards' model (remembered by import).
    s = pixquery("search", "a dog", "-L", b["base"] / "ray", "-k", "3")
    t = pixquery("search", "a dog", "-L", b["base"] / "local", "-k", "3")
    assert s.returncode == 0 and s.stdout == t.stdout, s.stderr


def test_bad_files_are_reported_through_ray_as_locally(both_ways):
    b = both_ways
    local = {(f["path"], f["reason"]) for f in json.loads(b["local"].stdout)["failed"]}
    ray = {(f["path"], f["reason"]) for f in json.loads(b["ray"].stdout)["failed"]}
    assert ray == local
    assert {p for p, _ in ray} == {str(b["awkward"][k]) for k in BAD}
    # In the shards too, with their reason and no embedding.
    from pixquery.ingest.shards import iter_shard_rows

    in_shards = {}
    for _, t in iter_shard_rows(str(b["out"])):
        for path, err, emb in zip(
            t.column("path").to_pylist(), t.column("error").to_pylist(), t.column("embedding").to_pylist()
        ):
            if err is not None:
                assert emb is None
                in_shards[path] = err
    assert set(in_shards.items()) == local
    # And printed like `pixquery index` prints them.
    text = pixquery("import", b["out"], "-L", b["base"] / "ray-text")
    assert text.returncode == 0, text.stderr
    for path, reason in local:
        assert f"✗ {path}: {reason}" in text.stdout


def test_reimport_is_idempotent(both_ways):
    b = both_ways
    before = _rows(b["base"] / "ray")
    again = pixquery("import", b["out"], "-L", b["base"] / "ray", "--json")
    assert again.returncode == 0, again.stderr
    rep = json.loads(again.stdout)
    assert rep["imported"] == 0 and rep["unchanged"] == len(before)
    assert rep["index"]["added"] == 0 and rep["index"]["removed"] == 0
    after = _rows(b["base"] / "ray")
    assert sorted(after) == sorted(before)
    assert all(after[p][:5] == before[p][:5] and np.array_equal(after[p][5], before[p][5]) for p in before)
    # A later `pixquery index` of the same folder finds everything unchanged: nothing re-embedded.
    idx = pixquery("index", b["photos"], "-L", b["base"] / "ray", "--json")
    assert json.loads(idx.stdout)["indexed"] == 0, idx.stdout


def test_shards_are_complete_and_described(both_ways):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = both_ways["out"]
    files = 7 + len(both_ways["awkward"])
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["manifest.parquet"] + [f"part-{i:06d}.parquet" for i in range((files + 3) // 4)]
    t = pq.read_table(out / "part-000000.parquet")
    emb = t.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb) and emb.value_type == pa.float32() and emb.list_size > 0
    assert t.column_names == [
        "path",
        "size",
        "mtime_ns",
        "sha256",
        "width",
        "height",
        "model",
        "fingerprint",
        "embedding",
        "error",
        "partition",
    ]
    meta = json.loads(t.schema.metadata[b"pixquery"])
    assert meta["model_spec"] == str(both_ways["model"]) and meta["fingerprint"] == t.column("fingerprint")[0].as_py()
    paths = _shard_paths(out)
    assert paths == sorted(set(paths)) and len(paths) == files  # every input once, in manifest order


# -- faults -----------------------------------------------------------------------------------


def test_driver_killed_mid_job_resumes_only_missing_shards(cluster, tiny_model, tmp_path):
    photos = make_photos(tmp_path / "photos", 12)
    out = tmp_path / "shards"
    args = (tmp_path / "photos", "--out", out, "-m", tiny_model, "--partition-size", "2", "--batch-size", "2", "--json")
    # 1st run: the driver is SIGKILLed while writing its 3rd shard (after the temp file, before the rename).
    first = embed(cluster, *args, env={"PIXQUERY_FAILPOINT": "shard/before_rename:3"})
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert sorted(p.name for p in out.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    assert [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the half-written one, hidden
    # 2nd run: SIGKILLed right after its 2nd shard.
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    second = embed(cluster, *args, env={"PIXQUERY_FAILPOINT": "embed/after_shard:2"})
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    assert len(list(out.glob("part-*"))) == 4
    # 3rd run: completes only what is missing; nothing written before is written again.
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    third = embed(cluster, *args)
    assert third.returncode == 0, third.stderr[-3000:]
    rep = json.loads(third.stdout)
    assert (rep["skipped_partitions"], rep["written_partitions"], rep["partitions"]) == (4, 2, 6)
    assert all(out.joinpath(n).stat().st_mtime_ns == m for n, m in kept.items())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert _shard_paths(out) == sorted(str(p) for p in photos)  # each input exactly once


def test_worker_node_killed_mid_job_loses_nothing(cluster, tiny_model, tmp_path):
    photos = make_photos(tmp_path / "photos", 40, size=(640, 480))
    out = tmp_path / "shards"
    cmd = [
        sys.executable,
        "-m",
        "pixquery.cli",
        "embed",
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "-m",
        str(tiny_model),
        "--partition-size",
        "2",
        "--batch-size",
        "2",
        "--concurrency",
        "1",
        "--json",
        "--address",
        cluster.address,
    ]
    proc = subprocess.Popen(cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while not list(out.glob("part-*")) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        shards_at_kill = len(list(out.glob("part-*")))
        killed = cluster.kill_node("node1")
        assert killed and proc.poll() is None, "the job ended before the node could be killed"
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster._start(f"node{len(cluster.nodes)}", head=False)  # for the tests after this one
    assert proc.returncode == 0, stderr[-4000:]
    assert shards_at_kill < 20
    rep = json.loads(stdout)
    assert rep["written_partitions"] == 20 and rep["embedded"] == 40 and not rep["failed"]
    assert _shard_paths(out) == sorted(str(p) for p in photos)  # nothing lost, nothing twice
    cluster.wait_nodes(2)


# -- object storage ---------------------------------------------------------------------------


def test_s3_source_and_shards(cluster, s3, tiny_model, tmp_path):
    """Photos in a bucket, shards written to the bucket, imported from it: the embeddings equal
    those of the same bytes indexed from a local folder."""
    photos = make_photos(tmp_path / "photos", 5) + [awkward_files(tmp_path / "awk")["truncated"]]
    client, bucket = s3["client"], s3["bucket"]
    for p in photos:
        client.upload_file(str(p), bucket, f"photos/{p.name}")
    client.put_object(Bucket=bucket, Key="photos/.hidden/skip.jpg", Body=photos[0].read_bytes())
    client.put_object(Bucket=bucket, Key="photos/readme.txt", Body=b"not a photo")
    res = embed(
        cluster,
        f"s3://{bucket}/photos",
        "--out",
        f"s3://{bucket}/shards",
        "-m",
        tiny_model,
        "--partition-size",
        "2",
        "--json",
    )
    assert res.returncode == 1, res.stderr[-3000:]  # the truncated photo
    rep = json.loads(res.stdout)
    assert rep["files"] == 6 and rep["written_partitions"] == 3
    assert [(f["path"], f["reason"].split(":")[0]) for f in rep["failed"]] == [
        (f"s3://{bucket}/photos/truncated.jpg", "cannot decode")
    ]
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="shards/")["Contents"])
    assert keys == ["shards/manifest.parquet"] + [f"shards/part-{i:06d}.parquet" for i in range(3)]
    # A re-run finds every shard and does nothing.
    again = embed(cluster, f"s3://{bucket}/photos", "--out", f"s3://{bucket}/shards", "-m", tiny_model, "--json")
    assert json.loads(again.stdout)["written_partitions"] == 0, again.stderr[-3000:]

    imp = pixquery("import", f"s3://{bucket}/shards", "-L", tmp_path / "lib", "--json", env=s3["env"])
    assert imp.returncode == 0, imp.stderr[-3000:]
    assert json.loads(imp.stdout)["imported"] == 5
    local = pixquery("index", tmp_path / "photos", "-L", tmp_path / "local", "-m", tiny_model)
    assert local.returncode == 0, local.stderr
    from pixquery.catalog import Catalog

    with Catalog(tmp_path / "lib" / "catalog.sqlite") as cat:
        (model,) = cat.models()
        remote = {}
        for p in photos[:5]:
            row = cat.image_by_path(f"s3://{bucket}/photos/{p.name}")
            remote[p.name] = (row.sha256, row.size, cat.image_embedding(model.id, row.id))
    here = _rows(tmp_path / "local")
    for p in photos[:5]:
        sha, size, vec = remote[p.name]
        assert (sha, size) == (here[str(p)][2], here[str(p)][0])
        assert float(np.max(np.abs(vec - here[str(p)][5]))) <= 1e-6
    found = pixquery("search", "a dog", "-L", tmp_path / "lib", "-k", "5")
    assert found.returncode == 0 and f"s3://{bucket}/photos/" in found.stdout, found.stderr


# -- no cluster needed ------------------------------------------------------------------------


def test_shard_writer_counts_a_redone_batch_once(tmp_path, tiny_model):
    """Ray may hand a batch back twice after a failure: each file lands in its shard once."""
    import pyarrow as pa

    from pixquery.ingest.executors import ray as ray_exec
    from pixquery.ingest.shards import embed_to_shards

    photos = make_photos(tmp_path / "photos", 5)

    def stream(pending, info, **kw):
        for chunk in (pending.slice(0, 3), pending.slice(1, 3), pending.slice(3, 2), pending.slice(0, 1)):
            rows = []
            for path in chunk.column("path").to_pylist():
                ok, dec, sha = ray_exec.decode_uri(path, info.preprocess_cfg)
                rows.append((sha, dec.width, dec.height))
            n = chunk.num_rows
            yield (
                chunk.drop_columns(["error"])
                .append_column("sha256", pa.array([r[0] for r in rows]))
                .append_column("width", pa.array([r[1] for r in rows], pa.int32()))
                .append_column("height", pa.array([r[2] for r in rows], pa.int32()))
                .append_column("error", pa.array([None] * n, pa.string()))
                .append_column("embedding", pa.array([[0.5] * info.dim] * n, pa.list_(pa.float32(), info.dim)))
            )

    rep = embed_to_shards(
        str(tmp_path / "photos"), str(tmp_path / "out"), model=str(tiny_model), partition_size=2, stream=stream
    )
    assert rep.written_partitions == 3 and rep.embedded == 5
    assert _shard_paths(tmp_path / "out") == sorted(str(p) for p in photos)


def test_ctrl_c_with_a_local_ray_then_resume(cluster, tiny_model, tmp_path):
    """No --address: the run starts its own Ray and stops it, also on Ctrl-C (exit 130); the
    re-run resumes from the shards written."""
    # Enough work after the first shard (~5 s here) that Ctrl-C always lands mid-job: with 24 photos
    # a fast run had written all 12 shards before the signal was handled.
    photos = make_photos(tmp_path / "photos", 160, size=(320, 240))
    out = tmp_path / "shards"
    ray_tmp = Path(tempfile.mkdtemp(prefix="pxloc", dir="/tmp"))
    env = dict(cluster.env, RAY_TMPDIR=str(ray_tmp), COLUMNS="200")
    cmd = [
        sys.executable,
        "-m",
        "pixquery.cli",
        "embed",
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "-m",
        str(tiny_model),
        "--partition-size",
        "2",
        "--batch-size",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while not list(out.glob("part-*")) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before Ctrl-C"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr[-3000:]
        assert "interrupted: the shards written so far are kept" in stderr
        written = len(list(out.glob("part-*")))
        assert 1 <= written < 80
        assert list(ray_tmp.glob("ray/session_*")), (
            "the local Ray did not use RAY_TMPDIR: the next check proves nothing"
        )
        time.sleep(2)
        assert not [p for p, (_, c) in _processes().items() if str(ray_tmp) in c and _alive(p)]  # its Ray is gone
        again = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["skipped_partitions"] == written
        assert _shard_paths(out) == sorted(str(p) for p in photos)
        assert not [p for p, (_, c) in _processes().items() if str(ray_tmp) in c and _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
        _signal([p for p, (_, c) in _processes().items() if str(ray_tmp) in c], signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_user_errors_exit_2(tmp_path, tiny_model):
    """Mistakes are one line and exit 2, before any Ray starts."""
    make_photos(tmp_path / "a", 2)
    make_photos(tmp_path / "b", 2)
    r = pixquery("embed", tmp_path / "nowhere", "--out", tmp_path / "o1", "-m", tiny_model)
    assert r.returncode == 2 and "no such file or folder" in r.stderr
    r = pixquery("embed", tmp_path / "a", "--out", tmp_path / "o2", "-m", tiny_model, "--engine", "spark")
    assert r.returncode == 2 and "--engine must be one of ray" in r.stderr
    r = pixquery("import", tmp_path / "a", "-L", tmp_path / "lib")
    assert r.returncode == 2 and "no shards" in r.stderr
    # A DIR started for one SOURCE is not silently reused for another.
    from pixquery.ingest.shards import ShardDir, list_source, manifest_table

    ShardDir(str(tmp_path / "o3")).makedirs()
    ShardDir(str(tmp_path / "o3")).write_table("manifest.parquet", manifest_table(list_source(str(tmp_path / "a")), 2))
    r = pixquery("embed", tmp_path / "b", "--out", tmp_path / "o3", "-m", tiny_model)
    assert r.returncode == 2 and "holds the shards of" in r.stderr
    r = pixquery("embed", tmp_path / "a", "--out", tmp_path / "o3", "-m", tiny_model, "--partition-size", "5")
    assert r.returncode == 2 and "--partition-size 2" in r.stderr


def test_text_list_source(cluster, tiny_model, tmp_path):
    """SOURCE may be a text file of paths (relative to the list's folder) or URLs; a listed file
    that is missing is a failure with its reason, the others are embedded."""
    photos = make_photos(tmp_path / "photos", 3)
    lst = tmp_path / "list.txt"
    lst.write_text(f"# photos\nphotos/{photos[0].name}\n{photos[1]}\nfile://{photos[2]}\nphotos/gone.jpg\n\n")
    res = embed(cluster, lst, "--out", tmp_path / "out", "-m", tiny_model, "--partition-size", "3", "--json")
    assert res.returncode == 1, res.stderr[-3000:]
    rep = json.loads(res.stdout)
    assert rep["files"] == 4 and rep["embedded"] == 3
    assert rep["failed"] == [
        {"path": str(tmp_path / "photos" / "gone.jpg"), "reason": "cannot read: No such file or directory"}
    ]
    assert _shard_paths(tmp_path / "out") == sorted([str(p) for p in photos] + [str(tmp_path / "photos" / "gone.jpg")])


# -- index --engine ray: the one pipeline's stages on the cluster, written into a local library -------


def _library_state(library: Path) -> dict:
    """Everything a run writes, by content: photos, videos, detections and every embedding."""
    import sqlite3

    db = sqlite3.connect(library / "catalog.sqlite")
    images = {r[0]: r[1:] for r in db.execute("SELECT path, size, mtime_ns, sha256, width, height FROM image")}
    videos = {r[0]: r[1:] for r in db.execute("SELECT path, size, mtime_ns, width, height, frame_count FROM video")}
    vectors = {}
    for path, kind, ts, x0, y0, x1, y1, blob in db.execute(
        """SELECT COALESCE(i.path, di.path, dv.path), COALESCE(d.kind, 'whole'), d.timestamp,
                      d.x0, d.y0, d.x1, d.y1, e.vector
               FROM embedding e LEFT JOIN image i ON i.id = e.image_id
               LEFT JOIN detection d ON d.id = e.detection_id
               LEFT JOIN image di ON di.id = d.image_id LEFT JOIN video dv ON dv.id = d.video_id"""
    ):
        key = (
            path,
            kind,
            None if ts is None else round(ts, 3),
            None if x0 is None else tuple(round(v, 4) for v in (x0, y0, x1, y1)),
        )
        vectors[key] = np.frombuffer(blob, np.float32)
    db.close()
    return {"images": images, "videos": videos, "vectors": vectors}


def test_index_engine_ray_writes_the_same_library_as_local(cluster, tiny_model, tmp_path):
    """Photos with regions, a video and a bad file, indexed locally and with --engine ray on the
    two-node cluster: the same rows, the same embeddings (<= 1e-6), the same failures and search."""
    from videos import make_video

    media = tmp_path / "media"
    make_photos(media, 5, size=(400, 300))
    make_video(media / "clip.mp4", [(3.0, 0), (3.0, 1)], size=(192, 108))
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    runs = {}
    for engine in ("local", "ray"):
        extra = ("--engine", "ray", "--address", cluster.address) if engine == "ray" else ()
        r = pixquery(
            "index",
            media,
            "-L",
            tmp_path / engine,
            "-m",
            tiny_model,
            "--regions",
            "--json",
            *extra,
            env=cluster.env,
            timeout=600,
        )
        assert r.returncode == 1, r.stderr[-3000:]  # the broken file, and nothing else
        runs[engine] = json.loads(r.stdout)
    local, ray = runs["local"], runs["ray"]
    assert [(f["path"], f["reason"]) for f in ray["failed"]] == [(f["path"], f["reason"]) for f in local["failed"]]
    assert [f["path"] for f in ray["failed"]] == [str(media / "broken.jpg")]
    for key in ("found", "indexed", "videos", "frames", "regions"):
        assert ray[key] == local[key], key
    assert local["videos"] == 1 and local["frames"] == 4 and local["regions"] > 5 * 6
    a, b = _library_state(tmp_path / "local"), _library_state(tmp_path / "ray")
    assert a["images"] == b["images"] and a["videos"] == b["videos"]
    assert sorted(a["vectors"]) == sorted(b["vectors"])
    assert max(float(np.abs(a["vectors"][k] - b["vectors"][k]).max()) for k in a["vectors"]) <= 1e-6
    s = pixquery("search", "a dog", "-L", tmp_path / "ray", "-k", "5")
    t = pixquery("search", "a dog", "-L", tmp_path / "local", "-k", "5")
    assert s.returncode == 0 and s.stdout == t.stdout, s.stderr
    # a second run through Ray has nothing to do
    r = pixquery(
        "index",
        "-L",
        tmp_path / "ray",
        "--engine",
        "ray",
        "--address",
        cluster.address,
        "--json",
        env=cluster.env,
        timeout=600,
    )
    assert r.returncode == 0 and json.loads(r.stdout)["indexed"] == 0, r.stderr[-3000:]


def test_index_engine_ray_survives_a_worker_node_killed_mid_run(cluster, tiny_model, tmp_path):
    """SIGKILL every process of the second node while `index --engine ray` runs: Ray re-runs the
    lost tasks and restarts the actor, and the library ends with each photo once."""
    import sqlite3

    make_photos(tmp_path / "photos", 80, size=(640, 480))  # enough work left when the node dies
    lib = tmp_path / "lib"
    cmd = [
        sys.executable,
        "-m",
        "pixquery.cli",
        "index",
        str(tmp_path / "photos"),
        "-L",
        str(lib),
        "-m",
        str(tiny_model),
        "--engine",
        "ray",
        "--address",
        cluster.address,
        "--batch-size",
        "2",
        "--json",
    ]
    proc = subprocess.Popen(cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = lib / "indexing.json"
    try:
        end = time.monotonic() + 120
        done = 0
        while done == 0 and proc.poll() is None and time.monotonic() < end:
            try:
                done = json.loads(status.read_text()).get("done", 0)
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        worker_node = [n for n in cluster.nodes if n != "head"][-1]  # the one alive (earlier tests restart one)
        killed = cluster.kill_node(worker_node)
        assert killed and proc.poll() is None, "the run ended before the node could be killed"
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster._start(f"node{len(cluster.nodes)}", head=False)  # for the tests after this one
    assert proc.returncode == 0, stderr[-4000:]
    assert done < 80
    assert stdout.lstrip().startswith("{"), (stdout[:2000], stderr[-2000:])
    report = json.loads(stdout)
    assert report["indexed"] == 80 and not report["failed"]
    db = sqlite3.connect(lib / "catalog.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM image").fetchone() == (80, 80)
    assert db.execute("SELECT COUNT(*) FROM embedding").fetchone()[0] == 80
    assert report["index"]["total"] == 80
    cluster.wait_nodes(2)
