"""A .pt file that carries code is refused, whichever command reads it, and the code never runs."""
import os

import pytest
import torch
import yaml
from test_run_safety import copy_run, digits_config, finished  # noqa: F401  (a fixture)

from longtail import cli
from longtail.models import build_model
from longtail.safe_load import UnsafeFileError, load_tensors

pytestmark = pytest.mark.xdist_group("run_safety")


class RunsCode:
    """Unpickled, this calls os.system: what a tampered checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def plant(path, marker, base=None):
    """Write a .pt at `path` that is a real checkpoint (or `base`'s contents) plus code to run."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True) if base is None else base
    ckpt["extra"] = RunsCode(marker)
    torch.save(ckpt, path)


def test_the_loader_refuses_code_and_names_the_file(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    plant(path, marker, {"model": {"w": torch.zeros(2)}})
    with pytest.raises(UnsafeFileError, match=rf"refusing to load {path}: .*posix.system.*nothing in it was run"):
        load_tensors(path)
    assert not marker.exists()
    # the check is real: torch's unrestricted loader does run it
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("entry", ["eval", "resume", "init_from"])
def test_no_command_runs_code_planted_in_a_checkpoint(entry, finished, tmp_path, capsys):  # noqa: F811
    run = copy_run(finished, tmp_path / "run")
    marker = tmp_path / "ran"
    for name in ("best.pt", "last.pt"):
        plant(run / name, marker)
    if entry == "eval":
        argv = ["eval", str(run)]
    elif entry == "resume":
        (run / "results.json").unlink()  # as if stopped during the final evaluation
        argv = ["train", "--resume", str(run)]
    else:
        argv = ["train", str(digits_config(tmp_path)), f"model.init_from={run}", "--run-dir", str(tmp_path / "second")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "nothing in it was run" in err and "Traceback" not in err
    assert str(run / ("best.pt" if entry != "resume" else "last.pt")) in err
    assert not marker.exists()


def test_pretrained_weights_carrying_code_are_refused(tmp_path, capsys):
    path, marker = tmp_path / "resnet10.pth", tmp_path / "ran"
    state = build_model("resnet10", 5).backbone.state_dict()
    plant(path, marker, dict(state))
    with pytest.raises(UnsafeFileError, match="refusing to load"):
        build_model("resnet10", 5, pretrained=str(path))
    cfg = yaml.safe_load(digits_config(tmp_path).read_text())
    cfg["model"] = {"name": "resnet10", "pretrained": str(path)}
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", str(tmp_path / "pre.yaml"), "--run-dir", str(tmp_path / "pre")]) == 2
    assert f"refusing to load {path}" in capsys.readouterr().err
    assert not marker.exists()
