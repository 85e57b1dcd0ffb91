"""Labelled photo collections for `pixquery eval`: one adapter per layout, one `Dataset` out.

A dataset is a list of items (an image path and the set of its class indices) and the class
list (an id such as a WordNet synset, and the name that goes into the prompt). Layouts:

* **labels CSV with a header** (``labels.csv`` in the folder, or the CSV itself), ImageNet style:
  columns ``filename`` (or ``path``) and ``class_index`` (or ``label``); the class list comes from
  ``classes.csv`` beside it (``class_index, wnid, clip_name``), else from the rows' own names
  (``clip_name`` or ``name``), else from the built-in ImageNet-1k names when the rows carry a
  ``wnid``. ../shared/data/imagenet-val-1300 (1000 classes from classes.csv) and
  imagenet-sample-images are examples.
* **generic CSV** ``path,label[,label...]`` (header optional; several labels per cell may also be
  separated by ``;`` or ``|``): class names are the distinct label strings, sorted.
* **folder per class**: ``root/<class>/**/*.jpg``. A folder named by a WordNet id (``n01440764``)
  gets its ImageNet name; other names are used as written with ``_`` shown as a space.
* **ImageNet DET** (the study's set): a folder holding the PASCAL-VOC style XML annotations and
  the images (anywhere below it, matched by file stem). Each image's labels are the synsets of
  its ``<object>`` elements (multi-label). The class list is the devkit's ``map_det.txt``
  (``n02672831 1 accordion``: the 200 DET synsets) when found in the folder, else the synsets
  seen in the annotations. Images without any object are left out (counted in ``notes``).

Prompt templates: ``{}`` (the bare class name), ``photo`` (``a photo of a {}.``), ``ensemble``
(CLIP's 80 templates) or a text file with one template per line, each containing ``{}``.
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pixquery.errors import PixqueryError
from pixquery.evaluation.imagenet_classes import IMAGENET_CLASSES, OPENAI_TEMPLATES

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic"}
_WNID = re.compile(r"^n\d{8}$")
_PATH_HEADERS = {"path", "filename", "file", "image", "image_path", "filepath", "file_path"}


class DatasetError(PixqueryError):
    """The dataset folder or file cannot be read as a labelled collection (names file and reason)."""


@dataclass(frozen=True)
class Item:
    path: Path
    labels: tuple[int, ...]  # indices into Dataset.class_names, sorted, at least one


@dataclass
class Dataset:
    name: str
    kind: str  # "labels-csv" | "csv" | "folder" | "imagenet-det"
    root: Path
    class_ids: list[str]  # synset id or label key, one per class
    class_names: list[str]  # the name put into prompts
    items: list[Item]
    notes: list[str] = field(default_factory=list)  # what was left out and why

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> list[tuple[int, ...]]:
        return [it.labels for it in self.items]

    @property
    def paths(self) -> list[Path]:
        return [it.path for it in self.items]

    @property
    def multi_label(self) -> bool:
        return any(len(it.labels) > 1 for it in self.items)

    def label_matrix(self) -> np.ndarray:
        m = np.zeros((len(self.items), self.n_classes), dtype=bool)
        for i, it in enumerate(self.items):
            m[i, list(it.labels)] = True
        return m

    def subset(self, n: int | None, seed: int = 0) -> Dataset:
        """A deterministic random sample of n items (kept in dataset order); all when n is None."""
        if n is None or n >= len(self.items):
            return self
        if n <= 0:
            raise DatasetError(f"--limit must be positive, not {n}")
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.items))[:n])
        return replace(
            self,
            items=[self.items[i] for i in keep],
            notes=self.notes + [f"sampled {n} of {len(self.items)} items (seed {seed})"],
        )

    def summary(self) -> dict:
        counts = np.bincount([c for it in self.items for c in it.labels], minlength=self.n_classes)
        return {
            "name": self.name,
            "kind": self.kind,
            "root": str(self.root),
            "items": len(self.items),
            "classes": self.n_classes,
            "classes_present": int((counts > 0).sum()),
            "multi_label": self.multi_label,
            "labels_per_item": float(np.mean([len(it.labels) for it in self.items])) if self.items else 0.0,
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------------------------
# entry point


def load_dataset(path: str | Path, kind: str = "auto") -> Dataset:
    """Read a labelled collection; `kind` is auto | labels-csv | csv | folder | imagenet-det."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path}: dataset not found")
    if kind == "auto":
        kind = _detect(path)
    if kind in ("labels-csv", "csv"):
        csv_path = path / "labels.csv" if path.is_dir() else path
        ds = _load_csv(csv_path)
    elif kind == "folder":
        ds = _load_folders(path)
    elif kind in ("imagenet-det", "det"):
        ds = _load_det(path)
    else:
        raise DatasetError(f"{path}: unknown dataset kind {kind!r} (auto, labels-csv, csv, folder, imagenet-det)")
    if not ds.items:
        raise DatasetError(f"{path}: no labelled images found")
    return ds


def _detect(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise DatasetError(f"{path}: not a dataset: expected a folder or a .csv file of path,label rows")
    if (path / "labels.csv").is_file():
        return "labels-csv"
    subdirs = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if next(path.rglob("*.xml"), None) is not None:
        return "imagenet-det"
    if any(_has_images(d) for d in subdirs):
        return "folder"
    raise DatasetError(
        f"{path}: cannot tell the dataset layout: no labels.csv, no XML annotations and no class "
        "sub-folders with images (see docs/evaluation.md for the accepted layouts)"
    )


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def _check_files(items: list[Item], source: Path) -> None:
    missing = [it.path for it in items if not it.path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DatasetError(f"{source}: {len(missing)} listed image file(s) do not exist, e.g. {shown}")


def _prompt_name(name: str) -> str:
    return name.replace("_", " ").strip()


# ----------------------------------------------------------------------------------------------
# CSV layouts


def _read_csv_rows(csv_path: Path) -> list[list[str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            return [row for row in csv.reader(f)]
    except UnicodeDecodeError as e:
        raise DatasetError(f"{csv_path}: not a UTF-8 text CSV ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DatasetError(f"{csv_path}: malformed CSV: {e}") from None
    except OSError as e:
        raise DatasetError(f"{csv_path}: cannot read: {e.strerror}") from None


def _load_csv(csv_path: Path) -> Dataset:
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: labels file not found")
    rows = [r for r in _read_csv_rows(csv_path) if any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f"{csv_path}: empty labels file")
    header = [c.strip().lower() for c in rows[0]]
    # ImageNet style (class_index / wnid columns, maybe more columns after them); a plain
    # "path,label" header is the generic layout, whose extra columns are more labels.
    if any(h in _PATH_HEADERS for h in header) and ("class_index" in header or "wnid" in header):
        return _load_headed_csv(csv_path, header, rows[1:])
    return _load_generic_csv(csv_path, rows)


def _load_headed_csv(csv_path: Path, header: list[str], rows: list[list[str]]) -> Dataset:
    """ImageNet style: filename,class_index,wnid,clip_name,... with an optional classes.csv."""
    col = {h: i for i, h in enumerate(header)}
    path_col = next(col[h] for h in header if h in _PATH_HEADERS)
    label_col = next((col[h] for h in ("class_index", "label", "class_id", "class", "labels") if h in col), None)
    wnid_col = col.get("wnid")
    name_col = next((col[h] for h in ("clip_name", "name", "class_name") if h in col), None)
    base = csv_path.parent

    # class table: classes.csv beside the labels, else what the rows say
    table: dict[str, tuple[str, str]] = {}  # key -> (class id, prompt name)
    order: list[str] = []
    classes_csv = base / "classes.csv"
    if classes_csv.is_file() and classes_csv != csv_path:
        crows = _read_csv_rows(classes_csv)
        ch = [c.strip().lower() for c in crows[0]] if crows else []
        cc = {h: i for i, h in enumerate(ch)}
        key_h = next((h for h in ("class_index", "label", "class_id", "wnid") if h in cc), None)
        nm_h = next((h for h in ("clip_name", "name", "class_name") if h in cc), None)
        if key_h is None or nm_h is None:
            raise DatasetError(f"{classes_csv}: needs a header with class_index (or label) and clip_name (or name)")
        for n, r in enumerate(crows[1:], start=2):
            if not any(c.strip() for c in r):
                continue
            try:
                key, nm = r[cc[key_h]].strip(), r[cc[nm_h]].strip()
            except IndexError:
                raise DatasetError(f"{classes_csv}: line {n} has too few columns") from None
            cid = r[cc["wnid"]].strip() if "wnid" in cc and cc["wnid"] < len(r) else key
            table[key] = (cid, _prompt_name(nm))
            order.append(key)
    builtin = {w: (w, n) for w, n in IMAGENET_CLASSES}

    derive = not order
    raw: list[tuple[Path, list[str]]] = []
    for n, r in enumerate(rows, start=2):
        try:
            rel = r[path_col].strip()
            if label_col is not None:
                keys = [k.strip() for k in re.split(r"[;|]", r[label_col]) if k.strip()]
            else:
                keys = [r[wnid_col].strip()]
        except IndexError:
            raise DatasetError(f"{csv_path}: line {n} has too few columns") from None
        if not rel or not keys:
            raise DatasetError(f"{csv_path}: line {n} has no path or no label")
        p = Path(rel)
        raw.append((p if p.is_absolute() else base / p, keys))
        if derive:
            for k in keys:
                if k in table:
                    continue
                wnid = r[wnid_col].strip() if wnid_col is not None and wnid_col < len(r) else ""
                if name_col is not None and name_col < len(r) and r[name_col].strip():
                    table[k] = (wnid or k, _prompt_name(r[name_col]))
                elif wnid in builtin:
                    table[k] = builtin[wnid]
                else:
                    table[k] = (k, _prompt_name(k))
    if derive:  # derived from rows: numeric keys in numeric order, others sorted
        keys_all = list(table)
        order = sorted(keys_all, key=lambda k: (0, int(k), "") if k.lstrip("-").isdigit() else (1, 0, k))
    index = {k: i for i, k in enumerate(order)}
    items = []
    for n, (p, keys) in enumerate(raw, start=2):
        unknown = [k for k in keys if k not in index]
        if unknown:
            raise DatasetError(f"{csv_path}: line {n}: label {unknown[0]!r} is not in {classes_csv.name}")
        items.append(Item(p, tuple(sorted({index[k] for k in keys}))))
    _check_files(items, csv_path)
    name = csv_path.parent.name if csv_path.name == "labels.csv" else csv_path.stem
    return Dataset(
        name=name,
        kind="labels-csv",
        root=base,
        class_ids=[table[k][0] for k in order],
        class_names=[table[k][1] for k in order],
        items=items,
    )


def _load_generic_csv(csv_path: Path, rows: list[list[str]]) -> Dataset:
    base = csv_path.parent
    first = [c.strip().lower() for c in rows[0]]
    if first and first[0] in _PATH_HEADERS:
        rows = rows[1:]
        start = 2
    else:
        start = 1
    raw = []
    for n, r in enumerate(rows, start=start):
        rel = r[0].strip() if r else ""
        labels = [x.strip() for cell in r[1:] for x in re.split(r"[;|]", cell) if x.strip()]
        if not rel:
            raise DatasetError(f"{csv_path}: line {n} has no path")
        if not labels:
            raise DatasetError(f"{csv_path}: line {n} ({rel}) has no label; expected path,label[,label...]")
        p = Path(rel)
        raw.append((p if p.is_absolute() else base / p, labels))
    names = sorted({lab for _, labs in raw for lab in labs})
    index = {k: i for i, k in enumerate(names)}
    items = [Item(p, tuple(sorted({index[x] for x in labs}))) for p, labs in raw]
    _check_files(items, csv_path)
    builtin = dict(IMAGENET_CLASSES)
    return Dataset(
        name=csv_path.stem,
        kind="csv",
        root=base,
        class_ids=names,
        class_names=[builtin.get(k, _prompt_name(k)) for k in names],
        items=items,
    )


# ----------------------------------------------------------------------------------------------
# folder per class


def _load_folders(root: Path) -> Dataset:
    builtin = dict(IMAGENET_CLASSES)
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    ids, names, items = [], [], []
    empty = []
    for d in folders:
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            empty.append(d.name)
            continue
        c = len(ids)
        ids.append(d.name)
        names.append(builtin.get(d.name, _prompt_name(d.name)))
        items.extend(Item(f, (c,)) for f in files)
    notes = [f"{len(empty)} class folder(s) without images left out: {', '.join(empty[:5])}"] if empty else []
    return Dataset(name=root.name, kind="folder", root=root, class_ids=ids, class_names=names, items=items, notes=notes)


# ----------------------------------------------------------------------------------------------
# ImageNet DET (XML annotations)


def read_synset_map(path: Path) -> list[tuple[str, str]]:
    """map_det.txt (``wnid index name``), LOC_synset_mapping.txt / synset_words.txt (``wnid name,
    other name``): (wnid, first name) in file order."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.strip().split(None, 2)
        if not parts:
            continue
        if not _WNID.match(parts[0]):
            raise DatasetError(f"{path}: line {n} does not start with a WordNet id (n########)")
        rest = parts[1:]
        if rest and rest[0].isdigit():
            rest = rest[1:]
        name = " ".join(rest).split(",")[0].strip() or parts[0]
        out.append((parts[0], _prompt_name(name)))
    return out


_SYNSET_FILES = ("map_det.txt", "devkit/data/map_det.txt", "synsets.txt", "LOC_synset_mapping.txt", "synset_words.txt")


def _load_det(root: Path) -> Dataset:
    xmls = sorted(root.rglob("*.xml"))
    if not xmls:
        raise DatasetError(f"{root}: no XML annotation files found")
    images: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            images.setdefault(p.stem, p)
    mapping: list[tuple[str, str]] = []
    for rel in _SYNSET_FILES:
        if (root / rel).is_file():
            mapping = read_synset_map(root / rel)
            break
    per_image: list[tuple[Path, list[str]]] = []
    no_object = no_image = 0
    for x in xmls:
        try:
            tree = ET.parse(x)
        except ET.ParseError as e:
            raise DatasetError(f"{x}: not a valid XML annotation ({e})") from None
        ann = tree.getroot()
        fn = (ann.findtext("filename") or x.stem).strip()
        wnids = sorted({(o.findtext("name") or "").strip() for o in ann.iter("object")} - {""})
        if not wnids:
            no_object += 1
            continue
        img = images.get(Path(fn).stem) or images.get(x.stem)
        if img is None:
            no_image += 1
            continue
        per_image.append((img, wnids))
    if not per_image:
        raise DatasetError(
            f"{root}: the XML annotations name no image found below this folder "
            f"({len(xmls)} XML files, {len(images)} images)"
        )
    builtin = dict(IMAGENET_CLASSES)
    notes = []
    if mapping:
        ids = [w for w, _ in mapping]
        names = [n for _, n in mapping]
    else:
        ids = sorted({w for _, ws in per_image for w in ws})
        names = [builtin.get(w, w) for w in ids]
        unnamed = [w for w in ids if w not in builtin]
        if unnamed:
            notes.append(
                f"no name for {len(unnamed)} synset(s) (e.g. {unnamed[0]}): put the devkit's "
                "map_det.txt in the dataset folder to name them"
            )
    index = {w: i for i, w in enumerate(ids)}
    items, outside = [], 0
    for img, ws in per_image:
        labs = sorted({index[w] for w in ws if w in index})
        outside += len(ws) - len(labs)
        if labs:
            items.append(Item(img, tuple(labs)))
    if no_object:
        notes.append(f"{no_object} annotated image(s) without objects left out (no label to score)")
    if no_image:
        notes.append(f"{no_image} annotation(s) whose image was not found left out")
    if outside:
        notes.append(f"{outside} object label(s) outside the class list ignored")
    return Dataset(
        name=root.name, kind="imagenet-det", root=root, class_ids=ids, class_names=names, items=items, notes=notes
    )


# ----------------------------------------------------------------------------------------------
# prompt templates

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "{}": ("{}",),
    "plain": ("{}",),
    "photo": ("a photo of a {}.",),
    "ensemble": OPENAI_TEMPLATES,
}


@dataclass(frozen=True)
class Templates:
    name: str  # "{}", "photo", "ensemble" or the file's stem
    templates: tuple[str, ...]

    def prompts(self, class_name: str) -> list[str]:
        return [t.replace("{}", class_name) for t in self.templates]


def resolve_templates(spec: str | Sequence[str]) -> list[Templates]:
    """'{}', 'photo', 'ensemble', a file path, or several of them comma-separated."""
    parts = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    out = []
    for s in parts:
        if not s:
            continue
        if s in TEMPLATE_SETS:
            out.append(Templates("{}" if s == "plain" else s, TEMPLATE_SETS[s]))
            continue
        p = Path(s).expanduser()
        if not p.is_file():
            raise DatasetError(f"{s}: not a template set ({', '.join(TEMPLATE_SETS)}) nor a template file")
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        bad = [i for i, ln in enumerate(lines) if "{}" not in ln]
        if not lines:
            raise DatasetError(f"{p}: no templates in the file")
        if bad:
            raise DatasetError(f"{p}: template {lines[bad[0]]!r} has no {{}} where the class name goes")
        out.append(Templates(p.stem, tuple(lines)))
    if not out:
        raise DatasetError("no prompt templates given")
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise DatasetError(f"template sets named twice: {', '.join(names)}")
    return out
