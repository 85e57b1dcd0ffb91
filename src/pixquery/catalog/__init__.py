"""The SQLite catalog: which files exist, their embeddings per model, and which index id is which file.

One class, plain SQL, an explicit schema version (PRAGMA user_version) with ordered migrations.
The study's tables (index, image, index_image, video, detection) are here as it defined them, plus
what a real tool needs: file size / mtime / sha256 / pixel size for change detection, a `model`
table and per-model `embedding` rows so that switching model or index kind never re-embeds an
unchanged file, and `folder` so that `pixquery index` with no argument rescans what it knows.

The catalog is the source of truth. Index files are derived from `embedding` rows and can always
be rebuilt from them; `index_image` maps an index's local ids (index_ref_id) to images or
detections, and is only changed in the same transaction that points the `index` row at a new,
fully written index file.

Every SQL statement of pixquery lives in this package (a CI check keeps it so): `schema.py`
(migrations), `store.py` (the Catalog: connection, settings, folders, photos, failures, models,
embeddings, indexes), `media.py` (videos and detections: regions and frames), `shards.py` (the
shard folders a store-only library loaded into its Milvus collection), `meta.py` (date taken, GPS,
camera, and the search filters over them), `duplicates.py` (content twins and the embeddings
`pixquery duplicates` groups), `rows.py`.
"""

from pixquery.catalog.rows import DetectionRow, ImageRow, IndexRow, Item, ModelRow, VideoRow
from pixquery.catalog.schema import MIGRATIONS, SCHEMA_VERSION
from pixquery.catalog.store import Catalog

__all__ = [
    "Catalog",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DetectionRow",
    "ImageRow",
    "IndexRow",
    "Item",
    "ModelRow",
    "VideoRow",
]
