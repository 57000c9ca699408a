"""Prediction on image files and export: scores against an independent decode + normalise + forward,
bad files reported without stopping the rest, the CSV, and TorchScript / ONNX files that give the
same scores (the TorchScript one in a process where longtail cannot be imported)."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SCORE_WITHOUT_LONGTAIL
from PIL import Image

from longtail.models import build_model
from longtail.predict import export_model, find_images, predict_images, sidecar_path, write_predictions_csv

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RESIZE, SIZE, C = 40, 32, 6
CLASSES = ["ant", "bee, queen", "cat", "dög", "eel", "fox"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real files: JPEG and PNG; RGB, grayscale and RGBA; several sizes; a space and non-ASCII in
    paths; one corrupt JPEG, one text file and one hidden image. Returns (folder, good files, broken)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)

    def save(rel, mode, h, w, fmt=None):
        shape = (h, w) if mode == "L" else (h, w, len(mode))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(path, format=fmt)
        return path

    good = [save("a_rgb.jpg", "RGB", 30, 45), save("b_gray.png", "L", 50, 25), save("c_rgba.png", "RGBA", 33, 33),
            save("d gray.JPG", "L", 41, 60, fmt="JPEG"), save("with space/big one.jpg", "RGB", 64, 48),
            save("ünïcødé/café.png", "RGB", 20, 70)]
    broken = root / "c_broken.jpg"
    broken.write_bytes((root / "a_rgb.jpg").read_bytes()[:200])  # a truncated JPEG
    (root / "notes.txt").write_text("not an image")
    save(".hidden.png", "RGB", 8, 8)
    return root, sorted(str(p) for p in good), str(broken)


def reference_scores(model, paths, adjustment=None):
    """Decoded with PIL, resized and cropped as torchvision's Resize(RESIZE) + CenterCrop(SIZE), normalised
    in float64: the scores (logits minus adjustment) and the uint8 crops."""
    crops = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        w, h = img.size
        nw, nh = (RESIZE, int(RESIZE * h / w)) if w < h else (int(RESIZE * w / h), RESIZE)
        img = img.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - SIZE) / 2)), int(round((nw - SIZE) / 2))
        crops.append(np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), dtype=np.uint8))
    u8 = np.stack(crops).transpose(0, 3, 1, 2)
    x = (u8 / 255.0 - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    model.eval()
    with torch.no_grad():
        scores = model(torch.from_numpy(x).float()).double()
    if adjustment is not None:
        scores = scores - adjustment.double()
    return scores, torch.from_numpy(np.ascontiguousarray(u8))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("resnet10", C)
    with torch.no_grad():  # batch-norm statistics that are not the identity, so eval mode matters
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def cosine_model():
    torch.manual_seed(1)
    return build_model("resnet10", C, head="cosine", scale=16.0)


ADJUST = torch.tensor([0.5, -1.0, 2.0, 0.0, -0.3, 1.2])


def test_find_images_walks_folders_and_skips_what_is_not_an_image(photos, tmp_path):
    root, good, broken = photos
    files, skipped = find_images([root, root / "a_rgb.jpg"])
    assert files == sorted(good + [broken])  # sorted, the upper-case .JPG included, the repeat listed once
    assert [p for p, _ in skipped] == [str(root / "notes.txt")]
    assert not any(".hidden" in f for f in files)
    with pytest.raises(FileNotFoundError, match="no such image file or folder: .*nope"):
        find_images([root, tmp_path / "nope"])


def test_predict_matches_an_independent_computation_and_reports_the_bad_file(photos, model):
    root, good, broken = photos
    files = find_images([root])[0]
    model.train()
    rows, failures = predict_images(model, files, image_size=SIZE, resize=RESIZE, mean=MEAN, std=STD,
                                    adjustment=ADJUST, batch_size=3, top_k=C, progress=False)
    assert model.training  # left in the mode it was given in
    assert failures == [(broken, "OSError: Truncated File Read")]
    assert [r["path"] for r in rows] == good  # in order, the broken file's batch-mates predicted
    ref, _ = reference_scores(model, good, ADJUST)
    probs = torch.zeros(len(rows), C, dtype=torch.float64)
    for i, row in enumerate(rows):
        for c, p in row["top"]:
            probs[i, c] = p
        assert [p for _, p in row["top"]] == sorted((p for _, p in row["top"]), reverse=True)
    torch.testing.assert_close(probs, torch.softmax(ref, 1), atol=1e-5, rtol=1e-4)
    # top-k is the head of the full ranking; no adjustment gives the raw logits' softmax
    rows2, _ = predict_images(model, good, image_size=SIZE, resize=RESIZE, mean=MEAN, std=STD, top_k=2,
                              progress=False)
    raw = torch.softmax(reference_scores(model, good)[0], 1)
    for row, r in zip(rows2, raw):
        p, c = r.topk(2)
        assert [k for k, _ in row["top"]] == c.tolist()
        torch.testing.assert_close(torch.tensor([q for _, q in row["top"]], dtype=torch.float64), p, atol=1e-5, rtol=1e-4)


def test_predict_refuses_an_adjustment_of_the_wrong_length(photos, model):
    with pytest.raises(ValueError, match="one offset per class"):
        predict_images(model, photos[1][:1], image_size=SIZE, resize=RESIZE, mean=MEAN, std=STD,
                       adjustment=torch.zeros(C + 1), progress=False)


def test_predictions_csv_columns_and_class_names(tmp_path):
    rows = [{"path": "x/a b.jpg", "top": [(3, 0.7), (1, 0.2), (0, 0.1)]},
            {"path": "ü.png", "top": [(1, 0.5), (5, 0.25), (2, 0.25)]}]
    out = tmp_path / "pred.csv"
    write_predictions_csv(rows, CLASSES, out, top_k=2)
    with open(out, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["path", "class", "probability", "top2_class", "top2_probability"]
    assert table[1] == ["x/a b.jpg", "dög", "0.700000", "bee, queen", "0.200000"]
    assert table[2] == ["ü.png", "bee, queen", "0.500000", "fox", "0.250000"]
    three = [{"path": "p.png", "top": [(2, 0.6), (0, 0.3), (1, 0.1)]}]
    write_predictions_csv(three, CLASSES[:3], out, top_k=10)  # never more columns than classes
    with open(out, encoding="utf-8", newline="") as f:
        assert list(csv.reader(f)) == [["path", "class", "probability", "top2_class", "top2_probability",
                                        "top3_class", "top3_probability"],
                                       ["p.png", "cat", "0.600000", "ant", "0.300000", "bee, queen", "0.100000"]]


def uint8_inputs(photos, model):
    root, good, _ = photos
    ref, u8 = reference_scores(model, good, ADJUST)
    rows, _ = predict_images(model, good, image_size=SIZE, resize=RESIZE, mean=MEAN, std=STD,
                             adjustment=ADJUST, top_k=C, progress=False)
    probs = torch.tensor([[dict(r["top"])[c] for c in range(C)] for r in rows], dtype=torch.float64)
    return ref, u8, probs




def test_torchscript_export_runs_without_longtail_and_gives_the_same_scores(photos, model, tmp_path):
    ref, u8, probs = uint8_inputs(photos, model)
    out = tmp_path / "model.pt"
    written = export_model(model, out, fmt="torchscript", classes=CLASSES, input_size=SIZE, mean=MEAN, std=STD,
                           adjustment=ADJUST, adjust_name="logit_adjustment", tau=1.5, resize=RESIZE)
    assert written == (out, tmp_path / "model.json") and sidecar_path(out) == tmp_path / "model.json"
    torch.save(u8, tmp_path / "u8.pt")
    run = subprocess.run([sys.executable, "-I", "-c", SCORE_WITHOUT_LONGTAIL, str(out), str(tmp_path / "u8.pt"),
                          str(tmp_path / "scores.pt")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    scores = torch.load(tmp_path / "scores.pt").double()
    torch.testing.assert_close(scores, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.softmax(scores, 1), probs, atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "model.json").read_text(encoding="utf-8")) == {
        "classes": CLASSES, "input_size": [SIZE, SIZE], "resize": RESIZE, "adjust": "logit_adjustment", "tau": 1.5,
        "format": "torchscript", "mean": list(MEAN), "std": list(STD),
        "input": "uint8 RGB images (N, 3, H, W): short side to `resize`, centre crop `input_size`",
        "output": "class scores (N, C): logits minus the adjustment; softmax gives probabilities"}
    assert not list(tmp_path.glob(".*tmp"))


def test_onnx_export_runs_in_onnxruntime_with_any_batch_size(photos, cosine_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ref, u8, probs = uint8_inputs(photos, cosine_model)  # the cosine head (ALA's) exports too
    out = tmp_path / "model.onnx"
    export_model(cosine_model, out, fmt="onnx", classes=CLASSES, input_size=(SIZE, SIZE), mean=MEAN, std=STD,
                 adjustment=ADJUST, adjust_name="logit_adjustment", tau=1.0)
    runner = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in runner.get_inputs()] == ["images"] and runner.get_inputs()[0].type == "tensor(uint8)"
    scores = torch.cat([torch.from_numpy(runner.run(None, {"images": u8[i:j].numpy()})[0])
                        for i, j in ((0, 1), (1, len(u8)))]).double()  # batches of 1 and 5
    torch.testing.assert_close(scores, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.softmax(scores, 1), probs, atol=1e-5, rtol=1e-4)
    meta = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert meta["format"] == "onnx" and meta["classes"] == CLASSES and meta["resize"] is None


def test_export_refuses_bad_arguments(model, tmp_path):
    kw = dict(input_size=SIZE, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(model, tmp_path / "m.pt", fmt="tflite", classes=CLASSES, **kw)
    with pytest.raises(ValueError, match="gives 6 class scores but 2 class names"):
        export_model(model, tmp_path / "m.pt", fmt="torchscript", classes=["a", "b"], **kw)
    with pytest.raises(ValueError, match="may not end in .json"):
        export_model(model, tmp_path / "m.json", fmt="torchscript", classes=CLASSES, **kw)
    assert not list(tmp_path.iterdir())
