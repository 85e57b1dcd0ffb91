"""What the scan leaves out: app caches and hidden folders by default, then the user's globs.

A user's globs come from two places, both with .gitignore's rules (pathspec's GitIgnoreSpec):

- `pixquery index FOLDER --exclude GLOB` (repeatable): remembered for FOLDER in the catalog and
  applied on every later scan of it, relative to FOLDER, as if written in a .pixqueryignore there;
- a `.pixqueryignore` file in any folder: its lines apply to that folder and below.

A glob without a slash matches a name at any depth (`*.png`, `Screenshots`); one with a slash is
anchored to the folder it belongs to (`/2019/raw`, `exports/*.jpg`); a trailing slash matches
folders only; `!glob` takes a file back in. As in git, the deeper file wins over the folders'
above it, --exclude counts as the top-most, and a folder left out is not entered at all, so
nothing below it can be taken back in.

Skipped by default (DEFAULT_SKIPS): hidden files and folders (names starting with "."), which
cover .thumbnails, .AppleDouble, .Trash-*, .@__thumb and our own library under ~/.local/share;
the caches and bins of NAS boxes and operating systems, which are not hidden; Lightroom's
preview catalogues (`*.lrdata`: their smart previews are DNGs); and a pixquery library folder
kept inside a photo folder (its thumbnails would come back as photos).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pixquery.errors import PixqueryError

IGNORE_FILE = ".pixqueryignore"

# Folder names never entered (compared exactly, or as a glob where they have one).
SKIPPED_FOLDERS = (
    "@eaDir",  # Synology's thumbnails and metadata (one per folder)
    "#recycle",
    "#snapshot",  # Synology's recycle bin and snapshots
    "@Recycle",
    "@Recently-Snapshot",  # QNAP
    "$RECYCLE.BIN",
    "System Volume Information",  # Windows
    "__MACOSX",  # macOS's resource forks unpacked from a zip
    "lost+found",
    "*.lrdata",  # Lightroom's previews and smart previews
)
DEFAULT_SKIPS = (
    ("hidden files and folders (.*: .thumbnails, .AppleDouble, .Trash-*, ...)",)
    + SKIPPED_FOLDERS
    + ("pixquery library folders (catalog.sqlite + indexes/)",)
)


def _skipped_folder(name: str) -> bool:
    return any(name == p or ("*" in p and fnmatch.fnmatchcase(name, p)) for p in SKIPPED_FOLDERS)


def check_globs(globs: Sequence[str]) -> list[str]:
    """The user's --exclude globs, checked (a bad one is a one-line PixqueryError)."""
    out = []
    for g in globs:
        g = g.strip()
        if not g:
            raise PixqueryError("--exclude needs a glob, e.g. --exclude '*.png' or --exclude 'Screenshots/'")
        try:
            _spec([g])
        except Exception as e:  # pathspec's own error types differ between versions
            raise PixqueryError(f"--exclude {g!r} is not a valid glob: {e}") from None
        out.append(g)
    return out


def _spec(lines: Sequence[str]):
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


@dataclass(frozen=True)
class Rules:
    """The exclusion rules in force in one folder: (base folder, spec) pairs, the top-most
    first. Made for a root with `for_root`, then `entering(folder, names)` for each subfolder."""

    rules: tuple = ()

    @classmethod
    def for_root(cls, root: str, globs: Sequence[str] = ()) -> Rules:
        return cls(((root, _spec(globs)),) if globs else ())

    def entering(self, folder: str, names: set[str], errors: list[tuple[str, str]]) -> Rules:
        """The rules below `folder` (whose entries are `names`): with its .pixqueryignore."""
        if IGNORE_FILE not in names:
            return self
        path = os.path.join(folder, IGNORE_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                spec = _spec(f.read().splitlines())
        except (OSError, UnicodeDecodeError) as e:
            errors.append((path, f"cannot read: {getattr(e, 'strerror', None) or e}"))
            return self
        except Exception as e:  # a line pathspec refuses
            errors.append((path, f"not a valid ignore file: {e}"))
            return self
        return Rules(self.rules + ((folder, spec),))

    def excluded(self, path: str, is_dir: bool) -> bool:
        """Whether the user's globs leave `path` out (the deepest matching rule decides)."""
        verdict = None
        for base, spec in self.rules:
            rel = os.path.relpath(path, base).replace(os.sep, "/")
            result = spec.check_file(rel + "/" if is_dir else rel)
            if result.include is not None:
                verdict = result.include
        return bool(verdict)


def skipped_by_default(name: str, is_dir: bool) -> bool:
    """Hidden names and known cache and bin folders (a library folder: `is_library_folder`)."""
    return name.startswith(".") or (is_dir and _skipped_folder(name))


def is_library_folder(names: set[str]) -> bool:
    """A pixquery library (its thumbnails/ are JPEGs that must not be indexed as photos)."""
    return "catalog.sqlite" in names and "indexes" in names
