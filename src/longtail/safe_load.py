"""Reading .pt files without running code.

A .pt file is a pickle, and unpickling can call any function the file names (a checkpoint carrying
`os.system` runs it on load). Every file longtail reads with torch goes through `load_tensors`,
which unpickles only tensors and plain values (dicts, lists, numbers, strings): torch's
`weights_only` loader, which is all a longtail checkpoint or a torchvision state dict needs.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch


class UnsafeFileError(ValueError):
    """A .pt file holds objects other than tensors and plain values; nothing in it was run."""


def load_tensors(path: str | Path, map_location="cpu"):
    """torch.load(path, weights_only=True), with a one-line error naming the file when it refuses."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if not found:  # not a refused object: a damaged file, for the caller to report as such
            raise
        raise UnsafeFileError(f"refusing to load {path}: it holds objects other than tensors and plain values "
                              f"({found.group(1)}), and unpickling them could run code; nothing in it was run. "
                              "Load only files written by longtail, or state dicts of tensors") from None
