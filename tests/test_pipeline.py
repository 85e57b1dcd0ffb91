"""The ingest pipeline (decode workers -> feeder -> encoder -> writer) with real parts.

A stand-in encoder (slow on purpose where a test needs back-pressure) is used where the model
does not matter; int8 goes through Library.index with the tiny model.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest

from photos import make_photos
from pixquery.encoders.base import PreprocessConfig
from pixquery.ingest.executors import local
from pixquery.ingest.pipeline import embed_files
from pixquery.ingest.scan import FileEntry


class StubEncoder:
    """The Encoder protocol without a model: the vector is the mean colour of the input."""

    name, dim, fingerprint = "stub", 3, "stub"
    preprocess_cfg = PreprocessConfig(size=32)

    def __init__(self, delay: float = 0.0, fail_at_batch: int | None = None):
        self.delay, self.fail_at_batch = delay, fail_at_batch
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def encode_images(self, batch):
        with self.lock:
            self.batches.append(len(batch))
            if self.fail_at_batch is not None and len(self.batches) > self.fail_at_batch:
                raise RuntimeError("encoder exploded")
        time.sleep(self.delay)
        v = np.asarray(batch, np.float32).mean(axis=(2, 3)) + 5.0
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_texts(self, texts):
        return np.zeros((len(texts), 3), np.float32)


def entries_for(paths) -> list[FileEntry]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(FileEntry(str(p), st.st_size, st.st_mtime_ns))
    return out


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline-photos")
    return make_photos(folder, 40, size=(96, 64))


def _collect():
    got: list = []
    return got, lambda batch: got.extend(batch)


@pytest.mark.parametrize("decoder", ["thread", "process"])
def test_results_come_in_input_order_with_hashes_and_sizes(photo_files, decoder):
    entries = entries_for(photo_files)
    got, write = _collect()
    progress = []
    stats = embed_files(
        entries,
        StubEncoder(),
        write,
        batch_size=7,
        workers=2,
        decoder=decoder,
        on_progress=lambda d, f: progress.append((d, f)),
    )
    assert [e.entry for e in got] == entries
    assert stats.embedded == 40 and stats.failed == [] and stats.batches == 6
    import hashlib

    assert got[3].sha256 == hashlib.sha256(photo_files[3].read_bytes()).hexdigest()
    assert (got[0].width, got[0].height) == (96, 64)
    assert progress[-1] == (40, 0) and [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert stats.peak_held <= stats.window


def test_never_holds_more_than_its_window_of_decoded_images(photo_files, monkeypatch):
    """A slow encoder and fast decoders: the decoders must wait, not pile up pixels."""
    decoded = [0]
    encoded = [0]
    worst = [0]
    lock = threading.Lock()
    real_job = local.decode_photo

    def counting_job(item, settings):
        out = real_job(item, settings)
        with lock:
            decoded[0] += 1
            worst[0] = max(worst[0], decoded[0] - encoded[0])
        return out

    class Counting(StubEncoder):
        def encode_images(self, batch):
            out = super().encode_images(batch)
            with lock:
                encoded[0] += len(batch)
            return out

    monkeypatch.setattr(local, "decode_photo", counting_job)
    got, write = _collect()
    stats = embed_files(
        entries_for(photo_files), Counting(delay=0.03), write, batch_size=4, workers=3, decoder="thread", window=10
    )
    assert stats.embedded == 40 and len(got) == 40
    assert stats.window == 10
    assert worst[0] <= 10, f"{worst[0]} decoded images were alive at once; the window is 10"
    assert stats.peak_held <= 10
    assert worst[0] >= 8  # the window was actually used (decoders ran ahead of the encoder)


def test_failures_are_reported_per_file_and_the_rest_is_embedded(tmp_path, photo_files):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    gone = tmp_path / "gone.jpg"
    shutil.copy(photo_files[0], gone)
    files = list(photo_files[:5]) + [bad] + list(photo_files[5:9]) + [empty, gone]
    entries = entries_for(files)
    gone.unlink()  # scanned, then deleted before decoding
    failures = []
    got, write = _collect()
    stats = embed_files(
        entries,
        StubEncoder(),
        write,
        batch_size=3,
        workers=2,
        decoder="process",
        on_failure=lambda p, r: failures.append((p, r)),
    )
    assert [e.entry.path for e in got] == [str(p) for p in list(photo_files[:9])]
    assert failures == stats.failed
    reasons = dict(failures)
    assert set(reasons) == {str(bad), str(empty), str(gone)}
    assert "empty" in reasons[str(empty)] and "cannot read" in reasons[str(gone)]
    assert "cannot decode" in reasons[str(bad)] or "not an image" in reasons[str(bad)]


def test_writer_exception_stops_the_run_and_propagates(photo_files):
    calls = []

    def write(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise OSError("disk full")

    t0 = time.perf_counter()
    with pytest.raises(OSError, match="disk full"):
        embed_files(
            entries_for(photo_files) * 5, StubEncoder(delay=0.01), write, batch_size=4, workers=2, decoder="thread"
        )
    assert time.perf_counter() - t0 < 10
    assert len(calls) == 2  # nothing written after the failure
    assert not [t for t in threading.enumerate() if t.name.startswith("pixquery-")]


def test_encoder_exception_propagates_and_stops_decoders(photo_files):
    enc = StubEncoder(fail_at_batch=1)
    got, write = _collect()
    with pytest.raises(RuntimeError, match="encoder exploded"):
        embed_files(entries_for(photo_files) * 5, enc, write, batch_size=4, workers=2, decoder="process")
    assert len(got) == 4
    assert not [t for t in threading.enumerate() if t.name.startswith("pixquery-")]


def test_a_decoder_process_that_dies_fails_only_its_file(photo_files, monkeypatch, tmp_path):
    """A codec that crashes the worker (simulated with kill -9 in the worker) costs one file."""
    import multiprocessing.forkserver as fs

    victim = tmp_path / "crasher.jpg"
    shutil.copy(photo_files[0], victim)
    files = list(photo_files[:10]) + [victim] + list(photo_files[10:20])
    # The forkserver hands its environment to the workers: restart it with the failpoint set.
    monkeypatch.setenv("PIXQUERY_FAILPOINT", "decode_worker/crasher.jpg")
    fs._forkserver._stop()
    try:
        failures = []
        got, write = _collect()
        stats = embed_files(
            entries_for(files),
            StubEncoder(),
            write,
            batch_size=4,
            workers=2,
            decoder="process",
            on_failure=lambda p, r: failures.append((p, r)),
        )
    finally:
        monkeypatch.delenv("PIXQUERY_FAILPOINT")
        fs._forkserver._stop()
    assert [p for p, _ in failures] == [str(victim)] and "died" in failures[0][1]
    assert [e.entry.path for e in got] == [str(p) for p in files if p != victim]
    assert stats.decoder_restarts >= 1


def test_a_submit_to_a_pool_already_broken_fails_only_the_file_that_died(photo_files, monkeypatch, tmp_path):
    """The race behind a flaky crash test, forced: a worker has died and concurrent.futures has
    marked the pool broken (on its own thread) before the feeder's next submit, which then raises
    BrokenProcessPool itself instead of handing back a broken result. The feeder must treat it
    like one: rebuild the pool, fail only the file whose worker died, decode the others in order."""
    import multiprocessing.forkserver as fs
    from concurrent.futures.process import BrokenProcessPool

    victim = tmp_path / "crasher.jpg"
    shutil.copy(photo_files[0], victim)
    files = list(photo_files[:10]) + [victim] + list(photo_files[10:20])
    real_submit = local._Decoders.submit
    seen = {"victim": None, "raced": 0}

    def submit(self, item):
        if seen["victim"] is not None and not seen["raced"]:
            # the next submit after the victim's waits until the pool is known broken (the pool
            # is marked broken before the futures in flight get their BrokenProcessPool)
            assert isinstance(seen["victim"].exception(timeout=60), BrokenProcessPool)
            seen["raced"] = 1
        future = real_submit(self, item)
        if item.path == str(victim) and seen["victim"] is None:
            seen["victim"] = future
        return future

    monkeypatch.setattr(local._Decoders, "submit", submit)
    monkeypatch.setenv("PIXQUERY_FAILPOINT", "decode_worker/crasher.jpg")
    fs._forkserver._stop()  # the forkserver hands its environment to the workers
    try:
        failures = []
        got, write = _collect()
        stats = embed_files(
            entries_for(files),
            StubEncoder(),
            write,
            batch_size=4,
            workers=2,
            decoder="process",
            window=len(files),
            on_failure=lambda p, r: failures.append((p, r)),
        )
    finally:
        monkeypatch.delenv("PIXQUERY_FAILPOINT")
        fs._forkserver._stop()
    assert seen["raced"] == 1  # the race happened: a submit came after the pool was broken
    assert [p for p, _ in failures] == [str(victim)] and "died" in failures[0][1]
    assert [e.entry.path for e in got] == [str(p) for p in files if p != victim]
    assert stats.decoder_restarts >= 1 and stats.peak_held <= stats.window


def test_empty_input_and_bad_arguments(photo_files):
    assert embed_files([], StubEncoder(), lambda b: None).embedded == 0
    with pytest.raises(ValueError):
        embed_files(entries_for(photo_files[:2]), StubEncoder(), lambda b: None, decoder="gpu")


def test_int8_through_library_index_agrees_with_fp32(tiny_model, tmp_path):
    """--precision int8 end to end; the agreement with fp32 (cosine, top-10 overlap) is reported."""
    from pixquery.api import Library

    photos = tmp_path / "photos"
    make_photos(photos, 24, size=(160, 120))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("*.int8.*", "*.opt.*", "*.safetensors"))
    libs = {p: Library.open(tmp_path / f"lib-{p}", model=str(model), precision=p) for p in ("fp32", "int8")}
    for p, lib in libs.items():
        report = lib.index([photos])
        assert report.indexed == 24 and not report.failed, (p, report.failed)
    assert libs["int8"].encoder.fingerprint != libs["fp32"].encoder.fingerprint
    assert list(model.glob("visual/model.int8.*.onnx"))  # the quantised copy was made and cached
    emb = {}
    for p, lib in libs.items():
        mid = lib.catalog.model_by_fingerprint(lib.encoder.fingerprint).id
        emb[p] = {
            os.path.basename(r.path): lib.catalog.image_embedding(mid, r.image_id)
            for r in lib.search(query="a dog", k=24)
        }
    cos = np.array([float(emb["fp32"][k] @ emb["int8"][k]) for k in emb["fp32"]])
    overlaps = []
    for q in ("a dog", "a red car", "mountains at sunset"):
        top = {p: {r.path for r in lib.search(query=q, k=10)} for p, lib in libs.items()}
        overlaps.append(len(top["fp32"] & top["int8"]) / 10)
    print(
        f"\nint8 vs fp32 through Library.index: image cosine min {cos.min():.5f} mean {cos.mean():.5f}; "
        f"top-10 overlap {np.mean(overlaps):.2f}",
        end="",
    )
    assert cos.min() > 0.98
    for lib in libs.values():
        lib.close()
