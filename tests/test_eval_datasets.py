"""Dataset adapters and prompt templates on small generated folders (plus the real ../shared layout)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixquery.errors import PixqueryError
from pixquery.evaluation.datasets import load_dataset, read_synset_map, resolve_templates

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _img(path: Path, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def test_labels_csv_with_classes_csv(tmp_path):
    _img(tmp_path / "images/a.png")
    _img(tmp_path / "images/b.png")
    (tmp_path / "classes.csv").write_text(
        "class_index,wnid,clip_name\n0,n01440764,tench\n1,n01443537,goldfish\n2,n0000002,great_white shark\n"
    )
    (tmp_path / "labels.csv").write_text(
        "filename,class_index,wnid\nimages/a.png,1,n01443537\nimages/b.png,0,n01440764\n"
    )
    ds = load_dataset(tmp_path)
    assert ds.kind == "labels-csv"
    assert ds.class_names == ["tench", "goldfish", "great white shark"]  # all classes, "_" shown as space
    assert ds.class_ids[0] == "n01440764"
    assert [it.labels for it in ds.items] == [(1,), (0,)]
    assert ds.items[0].path == (tmp_path / "images/a.png").resolve()
    assert ds.summary()["classes_present"] == 2


def test_labels_csv_without_classes_uses_its_rows(tmp_path):
    _img(tmp_path / "x.png")
    _img(tmp_path / "y.png")
    (tmp_path / "labels.csv").write_text("filename,class_index,clip_name\nx.png,7,cat\ny.png,3,dog\n")
    ds = load_dataset(tmp_path / "labels.csv")
    assert ds.class_names == ["dog", "cat"]  # numeric order of class_index
    assert [it.labels for it in ds.items] == [(1,), (0,)]


def test_generic_csv_multi_label_and_header(tmp_path):
    _img(tmp_path / "p/1.png")
    _img(tmp_path / "p/2.png")
    (tmp_path / "set.csv").write_text("path,label\np/1.png,dog,beach\np/2.png,cat;dog\n")
    ds = load_dataset(tmp_path / "set.csv")
    assert ds.kind == "csv"
    assert ds.class_names == ["beach", "cat", "dog"]
    assert [it.labels for it in ds.items] == [(0, 2), (1, 2)]
    assert ds.multi_label
    assert ds.label_matrix().tolist() == [[True, False, True], [False, True, True]]


def test_generic_csv_errors_name_file_and_line(tmp_path):
    _img(tmp_path / "1.png")
    (tmp_path / "a.csv").write_text("1.png,dog\n2.png,cat\n")
    with pytest.raises(PixqueryError, match=r"a\.csv: 1 listed image file\(s\) do not exist.*2\.png"):
        load_dataset(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("1.png,dog\n1.png\n")
    with pytest.raises(PixqueryError, match=r"b\.csv: line 2 .*no label"):
        load_dataset(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PixqueryError, match=r"c\.csv: not a UTF-8"):
        load_dataset(tmp_path / "c.csv")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(PixqueryError, match=r"d\.txt: not a dataset"):
        load_dataset(tmp_path / "d.txt")
    with pytest.raises(PixqueryError, match="dataset not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PixqueryError, match="cannot tell the dataset layout"):
        load_dataset(tmp_path / "empty")


def test_folder_per_class_with_wnid_names(tmp_path):
    _img(tmp_path / "n01440764/a.jpg")
    _img(tmp_path / "golden_retriever/b.png")
    _img(tmp_path / "golden_retriever/sub/c.png")
    (tmp_path / "no_images").mkdir()
    ds = load_dataset(tmp_path)
    assert ds.kind == "folder"
    assert ds.class_names == ["golden retriever", "tench"]
    assert ds.class_ids == ["golden_retriever", "n01440764"]
    assert sorted(it.labels for it in ds.items) == [(0,), (0,), (1,)]
    assert any("without images" in n for n in ds.notes)


DET_XML = """<annotation><folder>val</folder><filename>{name}</filename>
<size><width>8</width><height>8</height></size>{objects}</annotation>"""
OBJ = "<object><name>{}</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"


def _det(root: Path, name: str, wnids: list[str], image=True):
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{name}.xml").write_text(
        DET_XML.format(name=name, objects="".join(OBJ.format(w) for w in wnids))
    )
    if image:
        _img(root / "Data" / f"{name}.JPEG")


def test_imagenet_det_multi_label_with_map_det(tmp_path):
    _det(tmp_path, "ILSVRC2013_val_00000001", ["n02672831", "n02691156", "n02672831"])
    _det(tmp_path, "ILSVRC2013_val_00000002", ["n02219486"])
    _det(tmp_path, "ILSVRC2013_val_00000003", [])  # no object: left out
    _det(tmp_path, "ILSVRC2013_val_00000004", ["n02219486"], image=False)  # image missing: left out
    _det(tmp_path, "ILSVRC2013_val_00000005", ["n09999999"])  # not in the 200: ignored
    (tmp_path / "map_det.txt").write_text("n02672831 1 accordion\nn02691156 2 airplane\nn02219486 3 ant\n")
    ds = load_dataset(tmp_path)
    assert ds.kind == "imagenet-det"
    assert ds.class_names == ["accordion", "airplane", "ant"]
    assert {it.path.stem: it.labels for it in ds.items} == {
        "ILSVRC2013_val_00000001": (0, 1),
        "ILSVRC2013_val_00000002": (2,),
    }
    notes = " ".join(ds.notes)
    assert "without objects" in notes and "image was not found" in notes and "outside the class list" in notes


def test_imagenet_det_without_map_uses_builtin_names(tmp_path):
    _det(tmp_path, "a", ["n01440764"])
    _det(tmp_path, "b", ["n00007846"])  # "person": not an ImageNet-1k class
    ds = load_dataset(tmp_path)
    assert ds.class_ids == ["n00007846", "n01440764"]
    assert ds.class_names[1] == "tench"
    assert any("map_det.txt" in n for n in ds.notes)


def test_bad_xml_names_the_file(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "x.xml").write_text("<annotation><object>")
    with pytest.raises(PixqueryError, match=r"x\.xml: not a valid XML annotation"):
        load_dataset(tmp_path)


def test_synset_map_formats(tmp_path):
    (tmp_path / "m.txt").write_text("n01440764 tench, Tinca tinca\nn02672831 1 accordion\n\n")
    assert read_synset_map(tmp_path / "m.txt") == [("n01440764", "tench"), ("n02672831", "accordion")]
    (tmp_path / "bad.txt").write_text("tench\n")
    with pytest.raises(PixqueryError, match=r"bad\.txt: line 1"):
        read_synset_map(tmp_path / "bad.txt")


def test_subset_is_deterministic(tmp_path):
    for i in range(20):
        _img(tmp_path / f"c{i % 4}" / f"{i}.png")
    ds = load_dataset(tmp_path)
    a, b = ds.subset(7, seed=1), ds.subset(7, seed=1)
    assert a.paths == b.paths and len(a.items) == 7
    assert a.paths == [p for p in ds.paths if p in set(a.paths)]  # dataset order kept
    assert ds.subset(None) is ds
    with pytest.raises(PixqueryError):
        ds.subset(0)


def test_templates(tmp_path):
    sets = resolve_templates("{},photo,ensemble")
    assert [t.name for t in sets] == ["{}", "photo", "ensemble"]
    assert sets[0].prompts("dog") == ["dog"]
    assert sets[1].prompts("dog") == ["a photo of a dog."]
    assert len(sets[2].templates) == 80 and sets[2].templates[0] == "a bad photo of a {}."
    f = tmp_path / "mine.txt"
    f.write_text("# comment\nan image of {}\n\na {} again\n")
    (t,) = resolve_templates(str(f))
    assert t.name == "mine" and t.templates == ("an image of {}", "a {} again")
    f.write_text("no slot\n")
    with pytest.raises(PixqueryError, match=r"mine\.txt: template 'no slot' has no \{\}"):
        resolve_templates(str(f))
    with pytest.raises(PixqueryError, match="not a template set"):
        resolve_templates("fancy")


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "imagenet-val-1300").is_dir(), reason="../shared/data/imagenet-val-1300 is absent")
def test_shared_imagenet_layouts():
    ds = load_dataset(SHARED / "imagenet-val-1300")
    assert (len(ds.items), ds.n_classes, ds.summary()["classes_present"]) == (1300, 1000, 725)
    assert ds.class_names[:2] == ["tench", "goldfish"]
    sample = load_dataset(SHARED / "imagenet-sample-images")
    assert (len(sample.items), sample.n_classes) == (1000, 1000)
    assert sample.class_names == ds.class_names
    # the built-in templates equal the shared copy
    shared_t = (SHARED / "clip-vitb32-imagenet-zeroshot" / "templates.txt").read_text().splitlines()
    assert list(resolve_templates("ensemble")[0].templates) == shared_t
    assert np.all([p.is_file() for p in ds.paths[:10]])
