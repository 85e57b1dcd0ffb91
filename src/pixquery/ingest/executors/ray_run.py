"""`index --engine ray`: the ingest stages of a local library's run on a Ray cluster (Ray Data).

    items (the plan, from the driver)
      -> decode tasks (CPU): workers.decode_item, the same function the local executor runs, so
         photos are decoded once with their regions and videos sampled the same way
      -> encode actors (one encoder each, loaded once; GPUs where the cluster has them)
      -> back to the driver, which gathers each item's pieces and writes finished items into the
         library in input order (so the catalog's rows are the same as a local run's)

Ray retries the tasks of a dead worker or node and restarts dead actors; a killed driver loses
only what it had not committed, and the next run (local or ray) embeds just that.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from pixquery.encoders.base import Encoder
from pixquery.errors import PixqueryError
from pixquery.ingest.executors.local import PipelineStats
from pixquery.ingest.items import DecodeSettings, EmbeddedItem, MediaItem, Piece


def _decode_rows(row: dict, settings: DecodeSettings) -> list[dict]:
    """A Ray task's work: one item row -> one row per piece (the Piece pickled, pixels included)."""
    from pixquery.ingest.executors.ray import nice_decode_worker
    from pixquery.ingest.workers import decode_item

    nice_decode_worker()
    item = pickle.loads(row["item"])
    return [
        {"seq": row["seq"], "idx": i, "piece": pickle.dumps(piece, protocol=5)}
        for i, piece in enumerate(decode_item(item, settings))
    ]


class _EncodePieces:
    """One per actor: the encoder loaded once; a batch of piece rows -> the same rows with their
    pixels replaced by vectors (float32 bytes)."""

    def __init__(self, spec: str, precision: str, fingerprint: str, batch_size: int):
        from pixquery.ingest.executors.ray import load_checked_encoder

        self.encoder = load_checked_encoder(spec, precision, fingerprint)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        pieces = [pickle.loads(b) for b in batch["piece"]]
        with_pixels = [p for p in pieces if p.pixels is not None and p.n]
        vectors = []
        if with_pixels:
            pixels = np.concatenate([p.pixels for p in with_pixels])
            vectors = [
                self.encoder.encode_images(pixels[i : i + self.batch_size])
                for i in range(0, len(pixels), self.batch_size)
            ]
        flat = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
        out, at = [], 0
        for p in pieces:
            n = p.n if p.pixels is not None else 0
            out.append(pickle.dumps((replace(p, pixels=None), flat[at : at + n]), protocol=5))
            at += n
        return {"seq": batch["seq"], "idx": batch["idx"], "done": np.array(out, dtype=object)}


def run_ray(
    items: Sequence[MediaItem],
    encoder: Encoder,
    settings: DecodeSettings,
    write: Callable[[list[EmbeddedItem]], None],
    *,
    address: str | None = None,
    batch_size: int | None = 32,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    concurrency: int | None = None,
    num_gpus: float | None = None,
    model: str | None = None,
    **_local_only,
) -> PipelineStats:
    """Embed `items` on Ray and `write` finished items, in input order, here. Same contract as
    executors.local.run_local. address: see executors.ray.connect. workers: decode tasks at once
    (default: Ray's choice); concurrency: encode actors (default: one per GPU, else one per node).
    model: what each actor gives load_encoder (a name, so every node uses its own cached copy, or
    a folder every node has); default: the encoder's own folder."""
    from pixquery.ingest.executors.ray import connect, default_concurrency

    stats = PipelineStats()
    t0 = time.perf_counter()
    if not items:
        return stats
    batch_size = batch_size or int(getattr(encoder, "preferred_batch_size", 32))
    spec = model or str(getattr(encoder, "model_dir", encoder.name))
    with connect(address) as ray:
        if num_gpus is None:
            num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        rows = [{"seq": n, "item": pickle.dumps(item, protocol=5)} for n, item in enumerate(items)]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), max(1, len(rows) // 4)))
        ds = ds.flat_map(
            _decode_rows, fn_kwargs={"settings": settings}, num_cpus=1, **({"concurrency": workers} if workers else {})
        )
        ds = ds.map_batches(
            _EncodePieces,
            fn_constructor_kwargs={
                "spec": spec,
                "precision": getattr(encoder, "precision", "fp32"),
                "fingerprint": encoder.fingerprint,
                "batch_size": batch_size,
            },
            # rows are pieces: a photo alone is one crop, with regions ~20, a
            # video's piece 16; the actor re-cuts them into batches of batch_size
            batch_size=batch_size if settings.regions is None else max(1, batch_size // 8),
            batch_format="numpy",
            # min 1: a pool that lost a node's actor goes on with the others.
            # Half a CPU each: an actor computes on all of its node's cores anyway
            # (ONNX Runtime threads), and a node that must also host a lost node's
            # actor keeps a CPU for decode tasks (a full CPU each deadlocked here).
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=concurrency or default_concurrency(num_gpus)),
            num_cpus=0.5,
            num_gpus=num_gpus or None,
        )
        gathering: dict[int, dict[int, tuple[Piece, np.ndarray]]] = {}
        finished: dict[int, EmbeddedItem | None] = {}  # seq -> item (None: failed), until written in order
        next_seq, done, nfailed = 0, 0, 0
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=1):
            for seq, idx, blob in zip(batch["seq"], batch["idx"], batch["done"]):
                if int(seq) < next_seq or int(seq) in finished:
                    continue  # Ray re-ran a task whose output had already come (a node was lost)
                piece, vectors = pickle.loads(blob)
                got = gathering.setdefault(int(seq), {})
                got[int(idx)] = (piece, vectors)
                last = max(got)
                if not got[last][0].final or len(got) != last + 1:
                    continue
                del gathering[int(seq)]
                ordered = [got[i] for i in range(last + 1)]
                final = ordered[-1][0]
                stats.crops += sum(p.n for p, _ in ordered)
                if final.failure is not None:
                    finished[int(seq)] = None
                    nfailed += 1
                    stats.failed.append((final.item.path, final.failure))
                    if on_failure:
                        on_failure(final.item.path, final.failure)
                    continue
                regions = [r for p, _ in ordered for r in p.regions]
                vecs = [v for _, v in ordered if len(v)]
                first = ordered[0][0]
                finished[int(seq)] = EmbeddedItem(
                    final.item,
                    regions,
                    np.concatenate(vecs) if vecs else np.zeros((0, encoder.dim), np.float32),
                    sha256=first.sha256,
                    width=first.width if first.width is not None else final.width,
                    height=first.height if first.height is not None else final.height,
                    problem=final.problem,
                    info=final.info,
                    text=final.text,
                    text_seconds=final.text_seconds,
                )
                if final.problem:
                    stats.problems.append((final.item.path, final.problem))
                    if on_failure:
                        on_failure(final.item.path, final.problem)
            ready = []
            while next_seq in finished:
                e = finished.pop(next_seq)
                next_seq += 1
                done += 1
                if e is not None:
                    ready.append(e)
            if ready:
                te = time.perf_counter()
                write(ready)
                stats.wait_write_seconds += time.perf_counter() - te
                stats.embedded += len(ready)
                stats.batches += 1
            if on_progress:
                on_progress(done, nfailed)
        if gathering or finished or next_seq != len(items):
            raise PixqueryError(f"the Ray job ended with {len(items) - next_seq} item(s) unfinished")
    stats.seconds = time.perf_counter() - t0
    return stats
