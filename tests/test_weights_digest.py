"""The trainer's behaviour, pinned: the weights (and GALA's statistics) after a short fixed-seed run
for each loss and each augmentation recipe must stay what they were when tests/weights_digest.json
was written.

Two checks per case. A signature (the weights summed against fixed random projections) must agree
to 2e-6 of its largest entry on any machine: rounding alone (two threads instead of one) moves it by
about 1e-8, a learning rate 0.1% higher in one epoch of three by 7e-6 to 3e-4, and any change in
what is computed (another random draw, another order of operations in a recipe) by more. On the machine the file was written
on (the same torch and CPU), the SHA-256 of the bytes must match too: bit for bit.

Write the file again only for a change that is meant to alter training, or for a new case, and say
so in the commit:
    LONGTAIL_WRITE_DIGESTS=1 python -m pytest tests/test_weights_digest.py -k NEW_CASE
"""
import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from longtail.config import config_from_dict
from longtail.train import train

DIGESTS = Path(__file__).with_name("weights_digest.json")
WRITE = os.environ.get("LONGTAIL_WRITE_DIGESTS") == "1"

DIGITS = {"data": {"name": "digits-lt", "augment": "crop_flip", "image_size": 8},
          "model": {"name": "convnet"}, "optim": {"epochs": 3, "batch_size": 32, "lr": 0.05, "warmup_epochs": 1}}
LISTS = {"data": {"name": "lists", "image_size": 16, "resize": 20, "workers": 0},
         "model": {"name": "convnet"}, "optim": {"epochs": 3, "batch_size": 8, "lr": 0.05, "warmup_epochs": 1}}

CASES = {  # name: (base, overrides)
    **{f"loss-{name}": (DIGITS, {"loss": {"name": name.split("-")[0], **params}}) for name, params in [
        ("ce", {}), ("focal", {"gamma": 1.0}), ("cb", {}), ("ldam", {}), ("bs", {}), ("la", {"tau": 1.0}),
        ("gcl", {}), ("ala", {}), ("gala-paper", {"mode": "paper"}), ("gala-reference", {"mode": "reference"})]},
    "loss-gala-classifier": (DIGITS, {"loss": {"name": "gala", "mode": "paper", "phi": "classifier"}}),
    "drw": (DIGITS, {"loss": {"name": "ldam", "drw_epoch": 1}}),
    "mixup": (DIGITS, {"loss": {"name": "la"}, "optim": {"mixup_alpha": 1.0}}),
    "class-balanced-sampler": (DIGITS, {"loss": {"name": "ce"}, "data": {"sampler": "class_balanced"}}),
    "augment-none": (DIGITS, {"loss": {"name": "ce"}, "data": {"augment": "none"}}),
    "augment-autoaugment": (DIGITS, {"loss": {"name": "gala", "mode": "reference"}, "data": {"augment": "autoaugment"}}),
    "augment-imagenet": (LISTS, {"loss": {"name": "la"}, "data": {"augment": "imagenet"}}),
    "augment-imagenet-randaugment": (LISTS, {"loss": {"name": "gala", "mode": "reference"},
                                             "data": {"augment": "imagenet_randaugment"}}),
    # the stronger recipes' ingredients, pinned from when they were wired into the trainer
    "sam-gala": (DIGITS, {"loss": {"name": "gala", "mode": "reference"}, "optim": {"sam_rho": 0.05}}),
    "cutmix": (DIGITS, {"loss": {"name": "la"}, "optim": {"cutmix_alpha": 1.0}}),
    "max-norm-label-smoothing": (DIGITS, {"loss": {"name": "ce", "label_smoothing": 0.1},
                                          "optim": {"max_norm": 0.1, "weight_decay": 5e-3}}),
    "backbone-lr": (DIGITS, {"loss": {"name": "bs"}, "model": {"backbone_lr": 0.1}}),
}


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in extra.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def machine() -> str:
    """What decides the exact bytes: torch's version and the CPU's vector instructions."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = " ".join(sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma"))))
                break
    except OSError:
        pass
    return f"torch {torch.__version__}, {platform.machine()}, {flags}"


def _tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    out = {f"model.{k}": v for k, v in ckpt["model"].items()}
    out.update({f"loss.{k}": v for k, v in ckpt["loss"].items()})  # GALA's statistics
    return out


def digest(tensors: dict[str, torch.Tensor]) -> dict:
    h = hashlib.sha256()
    signature = np.zeros(4)
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        h.update(name.encode())
        h.update(t.cpu().numpy().tobytes())
        if t.is_floating_point():
            v = t.double().flatten().numpy()
            proj = np.random.default_rng(list(name.encode())).standard_normal((4, v.size))
            signature += proj @ v
    return {"sha256": h.hexdigest(), "signature": signature.tolist()}


def _image_lists(root: Path) -> dict:
    """A small long-tailed list dataset of PNGs (lossless, so every machine decodes the same pixels)."""
    rng = np.random.default_rng(0)
    entries = {"train": [], "val": [], "test": []}
    for c, n in enumerate((12, 6, 3)):
        for split, k in (("train", n), ("val", 2), ("test", 2)):
            for i in range(k):
                rel = f"{split}/{c}/{i}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                h, w = (24, 30) if i % 2 else (28, 22)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
                entries[split].append(f"{rel} {c}\n")
    for split, lines in entries.items():
        (root / f"{split}.txt").write_text("".join(lines))
    return {"root": str(root), "train_list": str(root / "train.txt"), "val_list": str(root / "val.txt"),
            "test_list": str(root / "test.txt")}


@pytest.fixture(scope="module")
def recorded() -> dict:
    recorded = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {"machine": machine(), "cases": {}}
    if WRITE:  # cases are added, or written again, one by one; the rest stay as recorded
        recorded["machine"] = machine()
    return recorded


@pytest.mark.parametrize("case", list(CASES))
def test_training_is_unchanged(case, recorded, tmp_path):
    base, extra = CASES[case]
    data = _merge(base, extra)
    if base is LISTS:
        data["data"].update(_image_lists(tmp_path / "images"))
    data.update(seed=3, precision="fp32", channels_last=False, threads=1, progress="quiet",
                out_dir=str(tmp_path), run_name="run")
    got = digest(_tensors(train(config_from_dict(data))))
    if WRITE:
        recorded["cases"][case] = got
        DIGESTS.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    want = recorded["cases"][case]
    got_sig, want_sig = np.array(got["signature"]), np.array(want["signature"])
    moved = np.abs(got_sig - want_sig).max() / np.abs(want_sig).max()
    assert moved < 2e-6, f"{case}: training computes something else than when the digests were written ({moved:.1e})"
    if recorded["machine"] == machine():
        assert got["sha256"] == want["sha256"], f"{case}: not bit-identical on the machine the digests were written on"
