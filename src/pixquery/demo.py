"""`pixquery demo`: index a small real photo collection and run example queries.

The collection: ../shared/data/imagenet-sample-images/demo_subset.csv when this checkout has it
(100 labelled photos), else the sample photos that ship inside installed packages (scikit-image,
matplotlib), else an error that says to pass --folder.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from pixquery.errors import ModelNotAvailable, PixqueryError

log = logging.getLogger(__name__)

QUERIES = ["a dog", "a bird on a branch", "a red sports car", "food on a plate", "a boat on the water"]
REPO_ROOT = Path(__file__).resolve().parents[2]  # an editable install / source checkout
TINY_MODEL = REPO_ROOT / "models" / "tiny-vit-b-32"


def collection(folder: Path | None = None) -> tuple[list[str], str]:
    """Paths of the demo photos, and where they come from."""
    if folder is not None:
        return [str(folder)], str(folder)
    for base in (Path.cwd(), REPO_ROOT):
        subset = base.parent / "shared" / "data" / "imagenet-sample-images" / "demo_subset.csv"
        if subset.exists():
            with open(subset, newline="") as f:
                rows = list(csv.DictReader(f))
            col = next((c for c in ("path", "file", "filename", "image") if rows and c in rows[0]), None)
            if col:
                paths = [str(_resolve(subset.parent, r[col])) for r in rows]
                return [p for p in paths if os.path.exists(p)], f"{subset} ({len(paths)} ImageNet sample photos)"
    found: list[str] = []
    try:
        import skimage.data

        skdir = Path(skimage.data.__file__).parent
        found += [str(p) for p in sorted(skdir.glob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    except ImportError:
        pass
    try:
        import matplotlib

        mpl = Path(matplotlib.get_data_path()) / "sample_data"
        found += [str(p) for p in sorted(mpl.glob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    except ImportError:
        pass
    if not found:
        raise PixqueryError(
            "no demo photos found: run `pixquery demo --folder ~/Pictures` with a folder of your own photos"
        )
    return found, "sample photos shipped inside installed packages"


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    if p.is_absolute():
        return p
    for candidate in (base / p, base / "images" / p):
        if candidate.exists():
            return candidate
    return base / p


DEMO_SETTING = "demo_model"  # marks a library the demo made, and the model it was made with


def run(model: str | None, folder: Path | None, library: Path | None, console: Console, progress) -> None:
    from pixquery.api import Library, default_library_path
    from pixquery.encoders.registry import DEFAULT_MODEL

    paths, source = collection(folder)
    ours = library is None  # the demo's own folder (older demos left no marker in it)
    library = library or default_library_path() / "demo"
    console.print(f"[bold]demo collection:[/] {escape(source)}")
    # Ask for the real model on every run (never the model the library remembers): a fallback
    # taken offline must not stick once the real weights can be had.
    lib = Library.open(library, model=model or DEFAULT_MODEL)
    try:
        _ = lib.encoder  # load now: an offline first run fails here with the fix
    except ModelNotAvailable as e:
        if model is not None or not TINY_MODEL.is_dir():
            raise
        console.print(f"[yellow]{escape(str(e))}[/yellow]")
        log.info("demo: falling back to the random-weight test model %s (%s)", TINY_MODEL, e)
        lib.close()
        lib = Library.open(library, model=str(TINY_MODEL))
    if getattr(lib.encoder, "random_weights", False) or Path(lib.model_name) == TINY_MODEL:
        console.print(
            f"[yellow bold]This demo runs the random-weight test model {escape(lib.model_name)}: its rankings are "
            "meaningless; it shows the pipeline working, not search quality. The next run uses the real model "
            "as soon as it can be downloaded.[/]"
        )
    lib = _tied_to_model(lib, library, console, ours)
    console.print(f"[bold]model:[/] {escape(lib.model_name)}   [bold]library:[/] {escape(str(library))}")
    report = lib.index(paths, progress=progress)
    progress.close()
    console.print(
        f"indexed {report.indexed}, skipped {report.skipped} unchanged, failed {len(report.failed)} "
        f"({report.images_per_second:.1f} images/s)"
    )
    for q in QUERIES:
        results = lib.search(q, k=3)
        console.print(f"\n[bold cyan]{q}[/]")
        for r in results:
            console.print(f"  {r.rank}. {r.score:.3f}  {escape(r.path)}", soft_wrap=True)
    info = lib.info()
    console.print(
        f"\n{info['images']} images in {escape(info['library'])}; try: "
        f'pixquery search --library {escape(str(library))} "a cat"'
    )
    lib.close()


def _tied_to_model(lib, library: Path, console: Console, ours: bool):
    """The demo library holds one model's embeddings: the one it was made with. Made with another
    (the random fallback, and the real model is here now), it is rebuilt from scratch. A library
    the demo did not make is never deleted: the model's embeddings are added beside the others."""
    from pixquery.api import CATALOG_FILE, Library

    made_with = lib.catalog.get_setting(DEMO_SETTING) or (lib.catalog.get_setting("model") if ours else None)
    fresh = lib.catalog.count_images() == 0 and not lib.catalog.models()
    if made_with is not None and made_with != lib.model_name:
        console.print(
            f"[yellow]the demo library was made with {escape(made_with)}; rebuilding it with "
            f"{escape(lib.model_name)}[/]"
        )
        model = lib.model_name
        lib.close()
        for name in (CATALOG_FILE, CATALOG_FILE + "-wal", CATALOG_FILE + "-shm"):
            (library / name).unlink(missing_ok=True)
        shutil.rmtree(library / "indexes", ignore_errors=True)
        lib = Library.open(library, model=model)
        fresh = True
    if fresh:
        with lib.catalog.transaction():
            lib.catalog.set_setting(DEMO_SETTING, lib.model_name)
    return lib
