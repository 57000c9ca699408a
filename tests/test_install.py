"""A non-editable install (a wheel built from this checkout) into a fresh virtual environment runs a
shipped config by name from another folder, with the data given as data.root or LONGTAIL_DATA.

To stay fast the new environment borrows this one's packages (torch, numpy, ...) through a .pth file
that lists this environment's site-packages as plain paths: Python adds them to sys.path but does not
run the .pth files inside them, so the editable install of longtail there (a path to src/) stays out."""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from site import getsitepackages

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_a_wheel_install_runs_a_shipped_config_by_name_from_another_folder(tmp_path, shared_data):
    t0 = time.perf_counter()
    # the checkout's packaging inputs, copied: the build writes build/ and *.egg-info, not into the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))

    venv = tmp_path / "venv ø"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                    None).stdout.strip())
    outer = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | set(getsitepackages())
    (site / "borrowed.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LONGTAIL_DATA", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # before the install longtail is not importable there: the editable install did not come along
    probe = subprocess.run([python, "-c", "import longtail"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'longtail'" in probe.stderr

    run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", source], tmp_path, env)

    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    longtail = venv / "bin" / "longtail"
    assert run([longtail, "--version"], elsewhere, env).stdout.strip() == f"longtail {version}"
    where = run([python, "-c", "import longtail, importlib.metadata as m; print(longtail.__file__); "
                 "print(m.version('longtail')); print(m.distribution('longtail').read_text('direct_url.json'))"],
                elsewhere, env).stdout.splitlines()
    assert Path(where[0]) == site / "longtail" / "__init__.py", where
    assert where[1] == version and '"editable": true' not in where[2]
    assert (site / "longtail" / "configs" / "cifar100_lt_if100_ce.yaml").is_file()

    common = ["train", "cifar100_lt_if100_ce", "data.limit_per_class=2", "data.limit_eval_per_class=1",
              "optim.epochs=1", "optim.batch_size=32", "threads=1", "progress=quiet", "eval.track_test=false"]
    by_root = run([longtail, *common, f"data.root={shared_data}", f"out_dir={tmp_path / 'runs'}", "run_name=root"],
                  elsewhere, env)
    assert f"run folder: {tmp_path / 'runs' / 'root'}" in by_root.stdout
    by_env = run([longtail, *common, f"out_dir={tmp_path / 'runs'}", "run_name=env"], elsewhere,
                 {**env, "LONGTAIL_DATA": str(shared_data)})
    assert f"run folder: {tmp_path / 'runs' / 'env'}" in by_env.stdout
    for name in ("root", "env"):
        results = json.loads((tmp_path / "runs" / name / "results.json").read_text())
        assert results["dataset"] == "cifar100-lt" and results["epochs"] == 1
        assert results["config"]["data"]["root"] == str(shared_data)
        assert sum(results["data"]["class_counts"]) == 200  # 2 of each of the 100 classes
    assert not list(elsewhere.iterdir())  # nothing written into the working folder
    print(f"install test: {time.perf_counter() - t0:.1f} s")
