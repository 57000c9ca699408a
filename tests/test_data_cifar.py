"""CIFAR loading, download/extraction, LT construction and validation splits."""

import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
from functools import partial

import numpy as np
import pytest
import torch

from longtail.config import DataConfig
from longtail.data import load_benchmark
from longtail.data.cifar import extract_folder, load_cifar
from longtail.data.imbalance import (
    balanced_validation_indices,
    limit_per_class,
    lt_counts,
    select_lt_indices,
    split_validation,
)

# --------------------------------------------------------------------------- a fake CIFAR-10 folder

NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_fake_cifar10(folder, per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * per_batch}, f,
                        protocol=2)
        arrays[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": NAMES10, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    return arrays


def _expected(arrays, names):
    data = np.concatenate([arrays[n][0] for n in names])
    labels = sum((arrays[n][1] for n in names), [])
    return data, labels


def _make_archive(tmp_path, arrays_seed=0):
    src = tmp_path / "src"
    arrays = _write_fake_cifar10(src / "cifar-10-batches-py", seed=arrays_seed)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, arrays


def test_fake_cifar10_roundtrip(tmp_path):
    arrays = _write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    tr = load_cifar(tmp_path, "cifar10", "train", verify=False)
    te = load_cifar(tmp_path / "cifar-10-batches-py", "cifar10", "test", verify=False)  # the folder itself works too
    data, labels = _expected(arrays, [f"data_batch_{i}" for i in range(1, 6)])
    assert tr.images.dtype == torch.uint8 and tr.images.shape == (100, 3, 32, 32)
    assert tr.labels.dtype == torch.int64 and tr.labels.tolist() == labels
    # channel-major layout: pixel (c, y, x) is data[c * 1024 + y * 32 + x]
    i, c, y, x = 37, 2, 5, 17
    assert tr.images[i, c, y, x].item() == data[i, c * 1024 + y * 32 + x]
    assert np.array_equal(tr.images.numpy().reshape(100, -1), data)
    assert te.labels.tolist() == arrays["test_batch"][1] and tr.class_names == NAMES10


def test_checksums_are_verified_by_default(tmp_path):
    _write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    with pytest.raises(ValueError, match=r"checksum mismatch for .*data_batch_1.*download"):
        load_cifar(tmp_path, "cifar10", "train")


def test_truncated_pickle_names_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar10(folder)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"data_batch_3.*corrupt or truncated.*download"):
        load_cifar(tmp_path, "cifar10", "train", verify=False)


def _rewrite(path, **changes):
    obj = pickle.loads(path.read_bytes(), encoding="latin1")
    obj.update(changes)
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.mark.parametrize("labels", [["a"] * 20, None, [[1, 2]] * 20, [1.5] * 20, [True] * 20, 7])
def test_malformed_labels_name_the_file(tmp_path, labels):
    # (verify=False, or a file without a known MD5) labels that are not integers once raised a bare
    # TypeError/ValueError from numpy naming no file, or (floats) were silently truncated to integers
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar10(folder)
    _rewrite(folder / "data_batch_2", labels=labels)
    with pytest.raises(ValueError, match=r"data_batch_2: 'labels' must be a list of integer class labels"):
        load_cifar(tmp_path, "cifar10", "train", verify=False)


@pytest.mark.parametrize("names", [None, 5, NAMES10[:4], "airplane"])
def test_malformed_class_names_name_the_meta_file(tmp_path, names):
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar10(folder)
    _rewrite(folder / "batches.meta", label_names=names)
    with pytest.raises(ValueError, match=r"batches\.meta: 'label_names' must be a list of the 10 class names"):
        load_cifar(tmp_path, "cifar10", "test", verify=False)


def test_pickle_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar10(folder)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar(tmp_path, "cifar10", "test", verify=False)
    assert not marker.exists()


def test_missing_folder_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*download=True"):
        load_cifar(tmp_path / "nowhere", "cifar100")
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "meta").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"missing train;"):  # the split asked for
        load_cifar(tmp_path, "cifar100")
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        load_benchmark(DataConfig(name="cifar100-lt", root=str(tmp_path / "nowhere")))


def test_archive_in_root_is_extracted(tmp_path):
    archive, arrays = _make_archive(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    os.replace(archive, root / archive.name)
    te = load_cifar(root, "cifar10", "test", verify=False)
    assert te.labels.tolist() == arrays["test_batch"][1]
    assert (root / "cifar-10-batches-py" / "batches.meta").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.mark.parametrize("kind", ["traversal", "symlink"])
def test_unsafe_archive_is_refused(tmp_path, kind):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../evil" if kind == "traversal" else "cifar-10-batches-py/link")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match="refusing to extract"):
        extract_folder(archive, dest, "cifar-10-batches-py")
    assert not (tmp_path / "evil").exists() and list(dest.iterdir()) == []


def test_extraction_touches_nothing_but_the_dataset_folder(tmp_path):
    # the archive holds a top-level folder named like one of the user's, and a stray file
    src = tmp_path / "src"
    arrays = _write_fake_cifar10(src / "cifar-10-batches-py")
    (src / "precious").mkdir()
    (src / "precious" / "from_archive.txt").write_text("archive")
    (src / "stray.txt").write_text("archive")
    root = tmp_path / "root"
    (root / "precious").mkdir(parents=True)
    (root / "precious" / "keep.txt").write_text("mine")
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in ("cifar-10-batches-py", "precious", "stray.txt"):
            tar.add(src / name, arcname=name)
    te = load_cifar(root, "cifar10", "test", verify=False)
    assert te.labels.tolist() == arrays["test_batch"][1]
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz", "precious"]
    assert [p.name for p in (root / "precious").iterdir()] == ["keep.txt"]
    assert (root / "precious" / "keep.txt").read_text() == "mine"


def test_a_local_archive_is_checked_like_a_download(tmp_path):
    archive, _ = _make_archive(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    os.replace(archive, root / archive.name)
    with pytest.raises(ValueError, match=r"checksum mismatch for .*cifar-10-python.tar.gz.*nothing was extracted"):
        load_cifar(root, "cifar10", "test")  # not the official archive
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]
    md5 = hashlib.md5((root / archive.name).read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=r"checksum mismatch for .*test_batch"):  # the archive passed, its pickles not
        load_cifar(root, "cifar10", "test", archive_md5=md5)


def test_an_incomplete_dataset_folder_is_never_replaced(tmp_path):
    archive, _ = _make_archive(tmp_path)
    root = tmp_path / "root"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "notes.txt").write_text("mine")
    os.replace(archive, root / archive.name)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py is missing .*move that folder away first"):
        load_cifar(root, "cifar10", "test", verify=False)
    assert [p.name for p in (root / "cifar-10-batches-py").iterdir()] == ["notes.txt"]


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_extracts(tmp_path, http_server):
    base, www = http_server
    archive, arrays = _make_archive(tmp_path)
    os.replace(archive, www / "c10.tar.gz")
    md5 = hashlib.md5((www / "c10.tar.gz").read_bytes()).hexdigest()
    root = tmp_path / "data"
    tr = load_cifar(root, "cifar10", "train", download=True, url=f"{base}/c10.tar.gz", archive_md5=md5, verify=False)
    data, labels = _expected(arrays, [f"data_batch_{i}" for i in range(1, 6)])
    assert np.array_equal(tr.images.numpy().reshape(len(labels), -1), data) and tr.labels.tolist() == labels
    assert (root / "cifar-10-python.tar.gz").read_bytes() == (www / "c10.tar.gz").read_bytes()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_download_checksum_mismatch_keeps_nothing(tmp_path, http_server):
    base, www = http_server
    archive, _ = _make_archive(tmp_path)
    os.replace(archive, www / "c10.tar.gz")
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=r"checksum mismatch.*expected 0{32}"):
        load_cifar(root, "cifar10", download=True, url=f"{base}/c10.tar.gz", archive_md5="0" * 32)
    assert list(root.iterdir()) == []  # no half-written or unverified file


def test_download_without_network_says_where_to_put_files(tmp_path, http_server):
    base, _ = http_server
    root = tmp_path / "data"
    with pytest.raises(ConnectionError, match=r"put it in .*data"):
        load_cifar(root, "cifar10", download=True, url=f"{base}/missing.tar.gz")  # HTTP 404
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ConnectionError, match=r"cifar-10-python\.tar\.gz"):
        load_cifar(root, "cifar10", download=True, url=f"http://127.0.0.1:{port}/x.tar.gz")
    assert list(root.iterdir()) == []


# --------------------------------------------------------------------------- LT counts and selection


def _ldam_counts(img_max, cls_num, imb_factor):
    # IMBALANCECIFAR.get_img_num_per_cls('exp', imb_factor=1/IF), restated.
    return [int(img_max * (imb_factor ** (i / (cls_num - 1.0)))) for i in range(cls_num)]


def _ldam_select(targets, img_num_per_cls, seed=0):
    # IMBALANCECIFAR.gen_imbalanced_data, restated (indices instead of data copies).
    np.random.seed(seed)
    targets_np = np.array(targets, dtype=np.int64)
    classes = np.unique(targets_np)
    selected = []
    for the_class, the_img_num in zip(classes, img_num_per_cls):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    return np.concatenate(selected)


def test_lt_counts_facts():
    c = lt_counts(500, 100, 100)
    assert c[0] == 500 and c[1] == 477 and c[-1] == 5 and sum(c) == 10847
    assert all(a >= b for a, b in zip(c, c[1:]))
    assert {f: sum(lt_counts(500, 100, f)) for f in (200, 50, 10)} == {200: 9502, 50: 12608, 10: 19573}
    for f in (10, 50, 100, 200):
        assert lt_counts(500, 100, f) == _ldam_counts(500, 100, 1 / f)
        assert lt_counts(5000, 10, f) == _ldam_counts(5000, 10, 1 / f)
    assert lt_counts(7, 4, 1) == [7, 7, 7, 7]


@pytest.mark.parametrize("bad", [0.01, 0.999, 0, -5, float("nan")])
def test_lt_counts_rejects_factor_below_one(bad):
    with pytest.raises(ValueError, match="imb_factor must be >= 1"):
        lt_counts(500, 100, bad)


def test_selection_restores_global_state_and_ignores_it():
    labels = np.repeat(np.arange(5), 30)
    rng_labels = np.random.default_rng(1).permutation(labels)
    counts = [30, 20, 10, 5, 2]
    np.random.seed(123)
    expected_next = np.random.rand(3)
    np.random.seed(123)
    a = select_lt_indices(rng_labels, counts)
    assert np.array_equal(np.random.rand(3), expected_next)  # caller's stream continues untouched
    np.random.seed(999)
    b = select_lt_indices(torch.from_numpy(rng_labels), counts)
    assert np.array_equal(a, b)
    assert np.array_equal(a, _ldam_select(rng_labels, counts))
    assert np.bincount(rng_labels[a]).tolist() == counts
    with pytest.raises(ValueError, match="class 0 has 30 images but 31"):
        select_lt_indices(rng_labels, [31, 1, 1, 1, 1])


def test_validation_balanced_disjoint_seeded():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(4), 50))
    exclude = select_lt_indices(labels, [40, 30, 20, 10])
    v = balanced_validation_indices(labels, exclude, per_class=8, seed=3)
    assert np.bincount(labels[v]).tolist() == [8] * 4
    assert not set(v.tolist()) & set(exclude.tolist()) and len(set(v.tolist())) == 32
    assert np.array_equal(v, balanced_validation_indices(labels, exclude, per_class=8, seed=3))
    assert not np.array_equal(v, balanced_validation_indices(labels, exclude, per_class=8, seed=4))
    small = balanced_validation_indices(labels, exclude, per_class=4, seed=3)
    assert set(small.tolist()) <= set(v.tolist())  # a smaller set is a subset of a larger one
    with pytest.raises(ValueError, match=r"class 0 has only 10 images left.*at most 10"):
        balanced_validation_indices(labels, exclude, per_class=11)


def test_split_validation_moves_head_images():
    labels = np.repeat(np.arange(3), 30)
    lt = select_lt_indices(labels, [30, 20, 5])  # class 0: nothing left over
    train, val, moved = split_validation(labels, lt, per_class=6, seed=0)
    lt0 = lt[labels[lt] == 0]
    assert np.array_equal(np.sort(moved), np.sort(lt0[-6:]))  # the last 6 of class 0's selection
    assert np.array_equal(train, lt[~np.isin(lt, lt0[-6:])])  # order kept
    assert np.bincount(labels[val]).tolist() == [6, 6, 6]
    assert not set(val.tolist()) & set(train.tolist())
    with pytest.raises(ValueError, match="class 0 has only 0 images left"):
        split_validation(labels, lt, per_class=6, shortfall="error")


def test_limit_per_class_keeps_first_k_in_order():
    labels = np.array([0, 1, 0, 2, 1, 0, 0, 2])
    idx = np.array([6, 5, 4, 3, 2, 1, 0, 7])
    out = limit_per_class(labels, idx, 2)
    expected, seen = [], {}
    for i in idx:
        seen[labels[i]] = seen.get(labels[i], 0) + 1
        if seen[labels[i]] <= 2:
            expected.append(i)
    assert out.tolist() == expected
    assert limit_per_class(labels, idx, None).tolist() == idx.tolist()


# --------------------------------------------------------------------------- real CIFAR-100


@pytest.fixture(scope="module")
def c100(shared_data):
    return load_cifar(shared_data, "cifar100", "train"), load_cifar(shared_data, "cifar100", "test")


@pytest.mark.slow
def test_real_cifar100_matches_file_bytes(c100, shared_data):
    tr, te = c100
    assert tr.images.shape == (50000, 3, 32, 32) and te.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(tr.labels).tolist() == [500] * 100 and torch.bincount(te.labels).tolist() == [100] * 100
    assert len(tr.class_names) == 100 and tr.class_names[:2] == ["apple", "aquarium_fish"]
    # The pixel array is the last N*3072 bytes of the pickle before its 4-byte tail: compare directly.
    for split, n in ((tr, 50000), (te, 10000)):
        raw = (shared_data / "cifar-100-python" / ("train" if n == 50000 else "test")).read_bytes()
        assert raw[-4:] == b"tbu."
        assert np.array_equal(np.frombuffer(raw[-(n * 3072 + 4):-4], np.uint8), split.images.numpy().reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("imb", [10, 50, 100, 200])
def test_real_lt_selection_equals_ldam(c100, imb):
    tr, _ = c100
    labels = tr.labels.numpy()
    counts = lt_counts(500, 100, imb)
    idx = select_lt_indices(labels, counts, seed=0)
    ref = _ldam_select(labels.tolist(), _ldam_counts(500, 100, 1.0 / imb))
    assert np.array_equal(idx, ref)
    assert len(idx) == {10: 19573, 50: 12608, 100: 10847, 200: 9502}[imb]
    assert np.bincount(labels[idx], minlength=100).tolist() == counts


@pytest.mark.slow
def test_real_benchmark_cifar100_lt(c100, shared_data):
    tr, te = c100
    b = load_benchmark(DataConfig(name="cifar100-lt", root=str(shared_data), imb_factor=100, val_per_class=20))
    labels = tr.labels.numpy()
    lt = _ldam_select(labels.tolist(), _ldam_counts(500, 100, 0.01))
    head = lt[labels[lt] == 0]
    expected_train = lt[~np.isin(lt, head[-20:])]  # class 0 gives its last 20 to validation
    assert np.array_equal(b.train.source_indices.numpy(), expected_train)
    assert torch.equal(b.train.images, tr.images[b.train.source_indices]) and torch.equal(
        b.train.labels, tr.labels[b.train.source_indices])
    assert b.class_counts == [480] + lt_counts(500, 100, 100)[1:] and sum(b.class_counts) == 10827
    v = b.val.source_indices.numpy()
    assert np.bincount(labels[v], minlength=100).tolist() == [20] * 100
    assert not set(v.tolist()) & set(expected_train.tolist())
    assert torch.equal(b.val.images, tr.images[b.val.source_indices])
    assert torch.equal(b.test.images, te.images) and torch.equal(b.test.labels, te.labels)
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.2023, 0.1994, 0.2010) and b.image_size == 32
    assert b.num_classes == 100 and b.class_names == tr.class_names and len(b.train) == 10827

    tiny = load_benchmark(DataConfig(name="cifar100-lt", root=str(shared_data), limit_per_class=3, limit_eval_per_class=2,
                                     val_per_class=0))
    assert tiny.val is None
    assert tiny.class_counts == [min(3, n) for n in lt_counts(500, 100, 100)]
    assert np.array_equal(tiny.train.source_indices.numpy(), limit_per_class(labels, lt, 3))  # exact subset
    assert torch.bincount(tiny.test.labels).tolist() == [2] * 100
    assert torch.equal(tiny.test.images, te.images[tiny.test.source_indices])
