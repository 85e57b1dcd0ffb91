"""Find the photos (and videos) under some folders and compare them with the catalog.

A file counts as changed when its size or mtime differs from what the catalog recorded; that is
what rclip and most photo tools use, and it costs one stat() per file. Symlinked folders are
followed, but each real folder is visited once, so symlink loops end. Hidden names, app caches,
--exclude globs and .pixqueryignore files leave files and folders out (ingest/exclude.py); a file
left out that the catalog knows counts as gone from disk.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pixquery.ingest import exclude as excluding
from pixquery.ingest import formats

# Pillow's formats, plus HEIC/HEIF, AVIF and camera RAW (ingest/formats.py): found whether or not
# their plugin is installed here, so that a missing one is reported, never a silent gap.
IMAGE_EXTENSIONS = (
    frozenset(
        {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
    )
    | formats.EXTENSIONS
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".3gp"}
)


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute, symlinks in the folder part kept as the user sees them
    size: int
    mtime_ns: int

    @property
    def is_video(self) -> bool:
        return Path(self.path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class ScanResult:
    to_embed: list[FileEntry] = field(default_factory=list)  # new or changed
    unchanged: list[tuple[int, FileEntry]] = field(default_factory=list)  # (image id, file)
    deleted: list[int] = field(default_factory=list)  # image ids no longer on disk
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    found: int = 0
    # Folders (or roots) that could not be read: what the catalog knows below them is kept, not
    # dropped, so an unmounted disk or a permission change never deletes part of a library.
    unreadable: list[str] = field(default_factory=list)


def normalize_root(path: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def walk(
    root: str,
    extensions: frozenset[str],
    errors: list[tuple[str, str]],
    unreadable: list[str] | None = None,
    exclude: Sequence[str] = (),
) -> Iterable[FileEntry]:
    """Yield media files under `root` (a folder or a single file), sorted, each real file once.
    Left out: what ingest/exclude.py skips by default, the `exclude` globs (relative to `root`)
    and what .pixqueryignore files say. A file given as `root` itself is never left out."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def entry_for(path: str, st: os.stat_result) -> FileEntry | None:
        key = (st.st_dev, st.st_ino)
        if key in seen_files:
            return None
        seen_files.add(key)
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            errors.append((path, "file name is not valid UTF-8"))
            return None
        return FileEntry(path, st.st_size, st.st_mtime_ns)

    try:
        st = os.stat(root)
    except OSError as e:
        errors.append((root, f"cannot read: {e.strerror or e}"))
        if unreadable is not None:
            unreadable.append(root)
        return
    if stat.S_ISREG(st.st_mode):
        if Path(root).suffix.lower() in extensions:
            e = entry_for(root, st)
            if e:
                yield e
        else:
            errors.append((root, "not a supported image or video file"))
        return

    stack = [(root, excluding.Rules.for_root(root, exclude))]
    while stack:
        folder, rules = stack.pop()
        try:
            fst = os.stat(folder)
        except OSError as e:
            errors.append((folder, f"cannot read folder: {e.strerror or e}"))
            if unreadable is not None:
                unreadable.append(folder)
            continue
        if (fst.st_dev, fst.st_ino) in seen_dirs:
            continue  # a symlink loop or a second link to a folder already walked
        seen_dirs.add((fst.st_dev, fst.st_ino))
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError as e:
            errors.append((folder, f"cannot list folder: {e.strerror or e}"))
            if unreadable is not None:
                unreadable.append(folder)
            continue
        names = {c.name for c in children}
        if folder != root and excluding.is_library_folder(names):
            continue  # a pixquery library kept among the photos: its thumbnails are not photos
        rules = rules.entering(folder, names, errors)
        subfolders = []
        for child in children:
            if child.name.startswith("."):
                continue  # hidden files and folders (.thumbnails, .git, our own library)
            try:
                cst = child.stat()  # follows symlinks
            except OSError as e:
                if child.is_symlink():
                    errors.append(
                        (
                            child.path,
                            "broken symbolic link"
                            if isinstance(e, FileNotFoundError)
                            else f"cannot read: {e.strerror or e}",
                        )
                    )
                    if unreadable is not None:
                        unreadable.append(child.path)  # maybe a disk that is not mounted now
                elif Path(child.name).suffix.lower() in extensions:
                    errors.append((child.path, f"cannot read: {e.strerror or e}"))
                continue
            if stat.S_ISDIR(cst.st_mode):
                if not excluding.skipped_by_default(child.name, True) and not rules.excluded(child.path, True):
                    subfolders.append((child.path, rules))
            elif stat.S_ISREG(cst.st_mode) and Path(child.name).suffix.lower() in extensions:
                if rules.excluded(child.path, False):
                    continue
                e = entry_for(child.path, cst)
                if e:
                    yield e
        stack.extend(reversed(subfolders))


def scan(
    roots: Iterable[str],
    known: dict[str, tuple[int, int, int]],
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    excludes: Mapping[str, Sequence[str]] | None = None,
) -> ScanResult:
    """Compare what is on disk under `roots` with `known` (path -> (id, size, mtime_ns) from the catalog).
    `excludes`: root -> its --exclude globs."""
    result = ScanResult()
    on_disk: set[str] = set()
    for root in roots:
        for entry in walk(root, extensions, result.errors, result.unreadable, (excludes or {}).get(root, ())):
            if entry.path in on_disk:
                continue
            on_disk.add(entry.path)
            result.found += 1
            prev = known.get(entry.path)
            if prev and prev[1] == entry.size and prev[2] == entry.mtime_ns:
                result.unchanged.append((prev[0], entry))
            else:
                result.to_embed.append(entry)
    kept = tuple(u.rstrip("/") + "/" for u in result.unreadable)
    result.deleted = [
        image_id
        for path, (image_id, _, _) in known.items()
        if path not in on_disk and path not in result.unreadable and not path.startswith(kept)
    ]
    return result
