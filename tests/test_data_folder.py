"""Image folders: scanning both layouts, the errors, the stratified split and its rule, the list
files it writes (read back by read_list / ListDataset), and check_folder."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from longtail.data.folder import (
    check_folder,
    read_classes,
    scan_folder,
    split_counts,
    split_folder,
    write_split_lists,
)
from longtail.data.listfile import ListDataset, decode_image, read_list


def make(root, rel, size=(8, 8), fmt=None, seed=0):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_classes(root, counts, prefix=""):
    """counts: {class name: images}; written in reverse order, so no listing order can match the result."""
    for name, n in reversed(list(counts.items())):
        for i in reversed(range(n)):
            make(root, f"{prefix}{name}/img {i:03d}.png", seed=i)


def test_scan_flat_folder_classes_sorted_images_recursive_by_extension(tmp_path):
    make(tmp_path, "zebra/a.JPG", fmt="JPEG")
    make(tmp_path, "zebra/deeper/still/b.jpeg", fmt="JPEG")
    make(tmp_path, "ant/ü é.webp", fmt="WEBP")
    make(tmp_path, "ant/x.BMP", fmt="BMP")
    make(tmp_path, "mole/y.png")
    (tmp_path / "mole" / "labels.csv").write_text("x")
    (tmp_path / "README.md").write_text("x")
    make(tmp_path, "ant/.thumb.png")
    make(tmp_path, ".cache/c.png")  # a hidden folder is not a class
    scan = scan_folder(tmp_path)
    assert scan.classes == ["ant", "mole", "zebra"] and not scan.pre_split
    assert scan.splits == {"all": [("ant/x.BMP", 0), ("ant/ü é.webp", 0), ("mole/y.png", 1),
                                   ("zebra/a.JPG", 2), ("zebra/deeper/still/b.jpeg", 2)]}
    assert sorted(scan.skipped) == [("README.md", "outside any class folder"),
                                    ("mole/labels.csv", "not an image (by extension)")]
    assert scan.class_counts() == [2, 1, 2] and scan.num_images == 5


def test_scan_split_folder_uses_train_classes_everywhere(tmp_path):
    make_classes(tmp_path, {"b": 3, "a": 2, "c": 1}, "train/")
    make_classes(tmp_path, {"a": 1, "c": 2}, "test/")  # no test image of b: allowed
    scan = scan_folder(tmp_path)
    assert scan.pre_split and scan.classes == ["a", "b", "c"] and set(scan.splits) == {"train", "test"}
    assert scan.class_counts("train") == [2, 3, 1] and scan.class_counts("test") == [1, 0, 2]
    assert scan.splits["test"][0] == ("test/a/img 000.png", 0)
    make_classes(tmp_path, {"b": 1}, "val/")
    assert scan_folder(tmp_path).class_counts("val") == [0, 1, 0]


@pytest.mark.parametrize("build, error, match", [
    (lambda r: None, FileNotFoundError, r"image folder .*nowhere does not exist: give the folder that holds"),
    (lambda r: [make(r, "a.png"), make(r, "b.png")], ValueError,
     r"holds images but no class sub-folders: put them in one sub-folder per class"),
    (lambda r: (r.mkdir(), (r / "notes.txt").write_text("x")), ValueError, r"holds no class sub-folders: expected DIR/<class>"),
    (lambda r: make_classes(r, {"cat": 3}), ValueError, r"only one class \('cat'\): a classifier needs at least two"),
    (lambda r: [make_classes(r, {"cat": 2, "dog": 1}), make(r, "emu/notes.txt", fmt="PNG")], ValueError,
     r"class folder .*emu holds no images \(\.jpg .*\): add images or remove the folder"),
    (lambda r: [make_classes(r, {"cat": 2, "dog": 1}, "train/"), make_classes(r, {"cat": 1, "owl": 1}, "test/")],
     ValueError, r"test/owl is a class that .*train does not have: every class in test/ needs training images"),
    (lambda r: make_classes(r, {"cat": 2, "dog": 1}, "train/"), ValueError, r"has train/ but no test/"),
    (lambda r: [make_classes(r, {"cat": 2, "dog": 1}, "train/"), make_classes(r, {"cat": 1}, "test/"),
                make_classes(r, {"cat": 1}, "extra/")], ValueError, r"holds train/ beside other folders \(extra\)"),
    (lambda r: [make_classes(r, {"cat": 2, "dog": 1}, "val/"), make_classes(r, {"cat": 1}, "test/")], ValueError,
     r"has test/ and val/ but no train/"),
    (lambda r: make_classes(r, {" cat": 2, "dog": 1}), ValueError, r"start with a space .*rename them"),
])
def test_scan_errors_name_the_folder_and_the_fix(tmp_path, build, error, match):
    root = tmp_path / "nowhere"
    build(root)
    with pytest.raises(error, match=match):
        scan_folder(root)


def test_scan_error_counts_the_other_problems(tmp_path):
    make_classes(tmp_path, {"cat": 2})
    (tmp_path / "dog").mkdir()
    (tmp_path / "emu").mkdir()
    with pytest.raises(ValueError, match=r"holds no images .* \(and 1 more: `longtail data check .*` lists all\)"):
        scan_folder(tmp_path)


@pytest.mark.parametrize("n, val_per_class, test_fraction, expected", [
    (1, 20, 0.2, (1, 0, 0)),   # nothing to spare
    (2, 20, 0.2, (1, 1, 0)),   # round(0.4) = 0 test; the spare image validates
    (3, 20, 0.2, (1, 1, 1)),   # at least one test image from 3 on
    (5, 20, 0.1, (1, 3, 1)),   # 0.5 rounds up
    (10, 20, 0.2, (1, 7, 2)),
    (100, 20, 0.2, (60, 20, 20)),
    (4, 0, 0.5, (2, 0, 2)),
    (10, 3, 0.0, (7, 3, 0)),
    (2, 5, 0.9, (1, 0, 1)),    # test first; training keeps one
])
def test_split_counts_rule(n, val_per_class, test_fraction, expected):
    assert split_counts(n, val_per_class, test_fraction) == expected


def test_split_counts_invariants():
    for n in range(1, 60):
        for v in (0, 1, 5, 20):
            for f in (0.0, 0.1, 0.25, 0.5):
                train, val, test = split_counts(n, v, f)
                assert train >= 1 and train + val + test == n and val <= v
                assert val == min(v, n - test - 1)
                assert test == min(n - 1, max(int(np.floor(f * n + 0.5)), 1 if (f > 0 and n >= 3) else 0))


@pytest.fixture
def flat(tmp_path):
    counts = {"head": 40, "mid": 9, "tail": 2, "one": 1}
    make_classes(tmp_path / "d", counts)
    return tmp_path / "d", counts


def test_split_is_stratified_balanced_and_disjoint(flat):
    root, counts = flat
    scan = scan_folder(root)
    split = split_folder(scan, val_per_class=5, test_fraction=0.2, seed=3)
    names = scan.classes  # head, mid, one, tail
    parts = (split.train, split.val, split.test)
    every = [p for part in parts for p, _ in part]
    assert sorted(every) == sorted(p for p, _ in scan.splits["all"]) and len(set(every)) == len(every)
    for label, name in enumerate(names):
        got = tuple(sum(1 for _, c in part if c == label) for part in parts)
        assert got == split_counts(counts[name], 5, 0.2), name
        assert all(p.startswith(name + "/") for part in parts for p, c in part if c == label)
    assert [s.name for s in split.too_small] == ["one", "tail"]
    assert split.too_small[1] == ("tail", 2, 1, 1, 0)
    assert split.val == sorted(split.val, key=lambda x: (x[1], x[0]))


def test_split_depends_on_the_seed_only(flat, tmp_path):
    root, _ = flat
    scan = scan_folder(root)
    a = split_folder(scan, 5, 0.2, seed=7)
    shuffled = scan_folder(root)
    random.Random(0).shuffle(shuffled.splits["all"])  # another listing order
    assert split_folder(shuffled, 5, 0.2, seed=7) == a
    assert split_folder(scan, 5, 0.2, seed=8).val != a.val
    make_classes(root, {"new": 12})  # another class leaves each class's split alone
    b = split_folder(scan_folder(root), 5, 0.2, seed=7)
    old = {scan.classes[c]: p for c, p in ((c, p) for p, c in a.val)}
    new_classes = scan_folder(root).classes
    assert {new_classes[c]: p for p, c in b.val if new_classes[c] != "new"} == old


def test_split_of_a_split_folder(tmp_path):
    make_classes(tmp_path, {"a": 10, "b": 3}, "train/")
    make_classes(tmp_path, {"a": 2}, "test/")
    scan = scan_folder(tmp_path)
    split = split_folder(scan, val_per_class=4, test_fraction=0.5, seed=0)
    assert split.test == scan.splits["test"]  # kept as given
    assert [sum(1 for _, c in split.val if c == k) for k in (0, 1)] == [4, 2]  # drawn from train/, no test share
    assert sorted(split.train + split.val) == sorted(scan.splits["train"])
    assert split.too_small == [("b", 3, 1, 2, 0)]  # no test image
    make_classes(tmp_path, {"a": 1, "b": 2}, "val/")
    given = scan_folder(tmp_path)
    split = split_folder(given, val_per_class=4)
    assert (split.train, split.val, split.test) == (given.splits["train"], given.splits["val"], given.splits["test"])


@pytest.mark.parametrize("kw, match", [({"val_per_class": -1}, "val_per_class"), ({"test_fraction": 1.0}, "test_fraction"),
                                       ({"seed": -2}, "seed")])
def test_split_refuses_bad_arguments(flat, kw, match):
    with pytest.raises(ValueError, match=match):
        split_folder(scan_folder(flat[0]), **kw)


def test_written_lists_round_trip_through_read_list_and_list_dataset(tmp_path):
    root = tmp_path / "imgs"
    make(root, "süß cat/photo 1.png", size=(12, 20))
    make(root, "süß cat/b.png", size=(9, 9))
    make(root, "dog/日本 語.jpg", size=(16, 10), fmt="JPEG")
    make(root, "dog/x y  z.png", size=(10, 10))
    scan = scan_folder(root)
    split = split_folder(scan, val_per_class=1, test_fraction=0.0)
    out = tmp_path / "lists"
    written = write_split_lists(out, scan.classes, *split[:3])
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt", "test.txt", "train.txt", "val.txt"]
    for name, items in (("train", split.train), ("val", split.val), ("test", split.test)):
        paths, labels = read_list(written[name])
        assert list(zip(paths, labels.tolist())) == items
    assert read_classes(written["classes"]) == scan.classes == ["dog", "süß cat"]
    ds = ListDataset(root, written["train"], num_classes=2, image_size=8, resize=8)
    for i, (p, label) in enumerate(split.train):
        img, y = ds[i]
        assert y == label and torch.equal(img, decode_image(root / p, 8, 8))
    with pytest.raises(ValueError, match="cannot be written to a list file"):
        write_split_lists(out, scan.classes, [("a\nb.png", 0)], [], [])
    with pytest.raises(ValueError, match="cannot be one line of classes.txt"):
        write_split_lists(out, ["a", "b\nc"], [], [], [])


def test_check_folder_lists_every_problem_with_class_names(tmp_path):
    make_classes(tmp_path, {"cat": 3, "dog": 1}, "train/")
    make_classes(tmp_path, {"cat": 1}, "test/")
    (tmp_path / "train" / "emu").mkdir()
    bad = tmp_path / "train" / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("x")
    report = check_folder(tmp_path, workers=1)
    assert not report.ok and report.classes == ["cat", "dog", "emu"]
    assert report.counts == {"train": [4, 1, 0], "test": [1, 0, 0]}
    assert len(report.problems) == 1 and "emu holds no images" in report.problems[0]
    assert [p for p, _ in report.unreadable] == ["train/cat/broken.jpg"] and "Error" in report.unreadable[0][1]
    assert report.skipped == [("train/dog/notes.txt", "not an image (by extension)")]
    text = report.summary()
    for piece in ("6 images (train 5, test 1), 3 classes, split into train/, test/", "min 1 (dog), max 4 (cat)", "cat: train 4, test 1",
                  "train/cat/broken.jpg: ", "classes without test images: 2", "PROBLEMS FOUND"):
        assert piece in text, (piece, text)
    assert report.as_dict()["ok"] is False
    bad.unlink()
    (tmp_path / "train" / "emu").rmdir()
    clean = check_folder(tmp_path)
    assert clean.ok and clean.summary().endswith("OK") and not clean.unreadable and clean.decoded
    assert "cat: train 3, test 1" in clean.summary()


def test_folder_benchmark_splits_once_and_a_run_reads_its_split_back(flat, tmp_path):
    from longtail.config import DataConfig
    from longtail.data import data_fingerprint, load_benchmark

    root, counts = flat
    data = DataConfig(name="folder", root=str(root), val_per_class=5, test_fraction=0.2, val_seed=3, image_size=8,
                      resize=8, augment="crop_flip")
    b = load_benchmark(data)
    scan = scan_folder(root)
    split = split_folder(scan, 5, 0.2, seed=3)
    assert b.name == "folder" and b.class_names == scan.classes == ["head", "mid", "one", "tail"]
    assert b.split_lists == {"train": split.train, "val": split.val, "test": split.test, "classes": scan.classes}
    for ds, items in ((b.train, split.train), (b.val, split.val), (b.test, split.test)):
        assert list(zip(ds.paths, ds.labels.tolist())) == items
    assert b.class_counts == [sum(1 for _, c in split.train if c == k) for k in range(4)]
    assert b.train[0][0].shape == (3, 8, 8) and not b.train.crops_on_load and not b.augment.cropped
    assert any(n.startswith("class 'one' (1 images) gives 0 validation") for n in b.notes), b.notes
    # a run folder holding the split's lists: read back, even after the folder gained a class
    run = tmp_path / "run"
    write_split_lists(run, scan.classes, split.train, split.val, split.test)
    make_classes(root, {"late": 12})
    again = load_benchmark(data, lists_dir=run)
    assert again.class_names == b.class_names and again.split_lists["train"] == split.train
    assert data_fingerprint(again) == data_fingerprint(b)
    fresh = load_benchmark(data)  # split afresh, the new class included
    assert fresh.num_classes == 5 and data_fingerprint(fresh) != data_fingerprint(b)
