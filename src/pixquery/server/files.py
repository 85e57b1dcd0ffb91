"""Opening a library's files for the server: by catalog id only, never by a path from a request.

A request names a photo (or a video) by its integer catalog id. The path comes from the catalog, and the file is
served only when all of these hold:

- the row exists and is not marked deleted;
- the path, with every symbolic link resolved, lies inside one of the library's indexed folders
  (`catalog.folders()`), or, for a file indexed on its own (no folder recorded), the file itself
  is not a symbolic link. So a photo later replaced by a link to ~/.ssh/id_rsa, or a link to a
  folder outside the library, is refused;
- both the catalog path and the resolved file have an extension the indexer accepts for that
  kind (a tampered catalog row or a link cannot make the server send a text file);
- the resolved file is a regular file (not a FIFO, device or folder), opened without following a
  last-moment symbolic link (O_NOFOLLOW) and checked with fstat on the open descriptor;
- open, then verify: the file actually opened is the one checked. O_NOFOLLOW guards only the last
  component: a folder on the path swapped for a symbolic link between the check and the open
  would lead the open elsewhere. So the descriptor's own path (Linux: /proc/self/fd/N; macOS:
  F_GETPATH) must be the checked real path, and where no such path is known, its device and
  inode must be those of the checked path, looked up again after the open.

Any refusal is `NotServable`, which the server turns into a plain 404 (it does not say which rule
failed: a client learns nothing about the disk).
"""

from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from pixquery.catalog import Catalog, ImageRow, VideoRow
from pixquery.ingest.scan import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS


class NotServable(Exception):
    """This id does not name a file the server may send (the reason is for logs only)."""


@dataclass
class OpenedImage:
    """An open, checked file: a photo (row: ImageRow) or a video (row: VideoRow)."""

    row: ImageRow | VideoRow
    real_path: str
    file: BinaryIO
    stat: os.stat_result

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _within(path: str, root: str) -> bool:
    if path == root:
        return True
    return path.startswith(root if root.endswith(os.sep) else root + os.sep)


def image_row(catalog: Catalog, image_id: int) -> ImageRow:
    row = catalog.image(int(image_id))
    if row is None or row.deleted:
        raise NotServable(f"image {image_id}: no such live catalog row")
    return row


def video_row(catalog: Catalog, video_id: int) -> VideoRow:
    row = catalog.video(int(video_id))
    if row is None or row.deleted:
        raise NotServable(f"video {video_id}: no such live catalog row")
    return row


def check_path(catalog: Catalog, path: str, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> str:
    """The real path to open for a catalog path, or NotServable (see the module doc)."""
    try:
        return _check_path(catalog, path, extensions)
    except OSError as e:  # realpath meets a link removed while it resolves it (a swap going on)
        raise NotServable(f"{path}: cannot resolve: {e.strerror or e}") from None


def _check_path(catalog: Catalog, path: str, extensions: frozenset[str]) -> str:
    if not path or not os.path.isabs(path) or "\x00" in path:
        raise NotServable(f"{path!r}: not an absolute path")
    real = os.path.realpath(path)
    for p in (path, real):
        if os.path.splitext(p)[1].lower() not in extensions:
            raise NotServable(f"{p}: not a file name of that kind")
    folders = catalog.folders()
    if any(_within(real, os.path.realpath(f)) for f in folders):
        return real
    if any(_within(os.path.normpath(path), f) for f in folders):
        raise NotServable(f"{path}: inside the library's folder, but resolves to {real}, outside every folder")
    # A file indexed on its own (`pixquery index photo.jpg`, the demo): the catalog records no
    # folder for it. Served while the file itself is not a symbolic link (its folders may be links,
    # as /tmp is on macOS: they were when it was indexed).
    if os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path)) == real:
        return real
    raise NotServable(f"{path}: resolves to {real}, outside the library's folders")


def open_image(catalog: Catalog, image_id: int) -> OpenedImage:
    row = image_row(catalog, image_id)
    return open_checked(row, check_path(catalog, row.path, IMAGE_EXTENSIONS))


def open_video(catalog: Catalog, video_id: int) -> OpenedImage:
    row = video_row(catalog, video_id)
    return open_checked(row, check_path(catalog, row.path, VIDEO_EXTENSIONS))


def descriptor_path(fd: int) -> str | None:
    """The path the kernel has for an open descriptor (Linux, macOS), or None where it cannot say."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    if hasattr(fcntl, "F_GETPATH"):  # macOS
        try:
            return os.fsdecode(fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024)).split(b"\0", 1)[0])
        except OSError:
            pass
    return None


def open_checked(row, real: str) -> OpenedImage:
    """Open `real` (a path check_path allowed) and make sure the file opened is that one."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as e:
        raise NotServable(f"{real}: cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotServable(f"{real}: not a regular file")
        _verify_opened(fd, st, real)
        return OpenedImage(row, real, os.fdopen(fd, "rb", closefd=True), st)
    except BaseException:
        os.close(fd)
        raise


def _verify_opened(fd: int, st: os.stat_result, real: str) -> None:
    """NotServable unless descriptor `fd` is the file at `real` (see the module doc: a folder on the
    path may have been swapped for a link between the check and the open)."""
    opened = descriptor_path(fd)
    if opened is not None:
        if opened != real:
            raise NotServable(f"{real}: the file opened is {opened} (a folder on the path changed since the check)")
        return
    try:  # no descriptor path here: the checked path must still name the very file opened
        now = os.stat(real, follow_symlinks=False)
    except OSError as e:
        raise NotServable(f"{real}: gone after opening: {e.strerror or e}") from None
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        raise NotServable(f"{real}: another file is there now (a folder on the path changed since the check)")
