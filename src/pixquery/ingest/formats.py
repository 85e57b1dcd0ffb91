"""Photo formats beyond Pillow's own, and the plugin each needs.

- HEIC/HEIF (iPhones since iOS 11, many Android phones): pillow-heif (libheif), a default
  dependency, because iPhone photos are the most common photos there are;
- AVIF: Pillow's own plugin (its wheels bundle libavif since 11.3);
- camera RAW (DNG, CR2/CR3, NEF, ARW, RAF, ORF, RW2, ...): rawpy (LibRaw), the `formats` extra.

The scan finds these files by extension whether or not their plugin is installed; `missing()`
tells the plan which plugin a file lacks here, so such files are counted and reported once per
run with the install command instead of being left out silently. Decoding asks `heif_opener()` /
`rawpy_module()`, which load the plugin at most once per process (decode workers included).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

INSTALL_FORMATS = "pip install 'pixquery[formats]'"


@dataclass(frozen=True)
class Format:
    name: str  # as a user knows it
    extensions: frozenset[str]
    plugin: str  # the package that decodes it (pip name)
    install: str  # the command that installs it


HEIF = Format("HEIC/HEIF", frozenset({".heic", ".heif", ".hif"}), "pillow-heif", INSTALL_FORMATS)
AVIF = Format("AVIF", frozenset({".avif"}), "Pillow with AVIF", "pip install --upgrade 'pillow>=11.3'")
RAW = Format(
    "camera RAW",
    # Adobe DNG; Canon CR2/CR3/CRW; Nikon NEF/NRW; Sony ARW/SRF/SR2; Fujifilm RAF; Olympus/OM ORF;
    # Panasonic RW2; Pentax PEF; Samsung SRW; Leica RWL; Hasselblad 3FR; Phase One IIQ; Minolta MRW;
    # Epson ERF; Kodak DCR/KDC.
    frozenset(
        {
            ".dng",
            ".cr2",
            ".cr3",
            ".crw",
            ".nef",
            ".nrw",
            ".arw",
            ".srf",
            ".sr2",
            ".raf",
            ".orf",
            ".rw2",
            ".pef",
            ".srw",
            ".rwl",
            ".3fr",
            ".iiq",
            ".mrw",
            ".erf",
            ".dcr",
            ".kdc",
        }
    ),
    "rawpy",
    INSTALL_FORMATS,
)
FORMATS = (HEIF, AVIF, RAW)
EXTENSIONS = frozenset().union(*(f.extensions for f in FORMATS))

# The ISO-BMFF major brands of HEIF images and sequences (AVIF's are Pillow's own plugin's).
HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
)


DNG_VERSION_TAG = 50706  # a TIFF with this tag in its first IFD is a DNG


def sniff_raw(prefix: bytes) -> bool:
    """Whether a file's first 16 bytes are those of a RAW format with its own signature (Canon
    CR2/CR3, Fujifilm RAF, Olympus ORF, Panasonic RW2). DNG is told by its TIFF tag; NEF, ARW,
    PEF and the like are plain TIFF and known by their extension only."""
    return (
        (prefix[:4] == b"II*\x00" and prefix[8:10] == b"CR")
        or (prefix[4:8] == b"ftyp" and prefix[8:12] == b"crx ")
        or prefix.startswith(b"FUJIFILMCCD-RAW")
        or prefix[:4] in (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00")
    )


def format_of(path: str) -> Format | None:
    ext = Path(path).suffix.lower()
    return next((f for f in FORMATS if ext in f.extensions), None)


def is_raw_name(name) -> bool:
    return isinstance(name, (str, Path)) and Path(name).suffix.lower() in RAW.extensions


# -- plugins, loaded at most once per process -----------------------------------------------

_state: dict[str, object] = {}


def _import(module: str):
    """The module, or the reason it cannot be used (a str) - never raises."""
    if module not in _state:
        try:
            _state[module] = importlib.import_module(module)
        except Exception as e:  # ImportError, or a wheel whose shared library does not load
            _state[module] = "is not installed" if isinstance(e, ModuleNotFoundError) else f"cannot be loaded ({e})"
    return _state[module]


def heif_opener() -> str | None:
    """Register pillow-heif's Pillow plugin (once); None when it works, else why not."""
    mod = _import("pillow_heif")
    if isinstance(mod, str):
        return mod
    if not _state.get("heif-registered"):
        mod.register_heif_opener()
        _state["heif-registered"] = True
    return None


def rawpy_module():
    """rawpy, or the reason it cannot be used (a str)."""
    return _import("rawpy")


def avif_problem() -> str | None:
    from PIL import features

    try:
        return None if features.check("avif") else "has no AVIF support (built without libavif)"
    except Exception:  # Pillow older than 11.2: no AVIF module at all
        return "has no AVIF support (older than 11.3)"


def missing(fmt: Format) -> str | None:
    """Why `fmt` cannot be decoded in this process ("pillow-heif is not installed"), or None."""
    if fmt is HEIF:
        problem = heif_opener()
    elif fmt is RAW:
        problem = rawpy_module()
        problem = problem if isinstance(problem, str) else None
    else:
        problem = avif_problem()
        return f"Pillow {problem}" if problem else None
    return f"{fmt.plugin} {problem}" if problem else None


def fix(fmt: Format, problem: str) -> str:
    """What is wrong and the command that fixes it: "rawpy is not installed: pip install ..."."""
    return f"{problem}: {fmt.install}"


def not_decodable(fmt: Format, problem: str) -> str:
    """The reason recorded for each file whose plugin is missing: names the fix."""
    return f"{fmt.name} file, but {fix(fmt, problem)}"
