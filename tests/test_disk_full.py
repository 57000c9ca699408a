"""A checkpoint that cannot be written (a full disk, a file-size limit) is one line naming the folder and
the fix; the previous last.pt stays whole and resumable. Both tests make torch.save fail for real."""
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from test_run_safety import digits_config

from longtail import cli

SAVE_LIMITED = textwrap.dedent("""
    import resource, signal, sys
    from longtail import cli, rundir

    real = rundir.atomic_save

    def limited(obj, path):
        # after the first last.pt, no file may grow past half its size: the second one fails to write
        if path.name == "last.pt" and path.exists():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size // 2, resource.RLIM_INFINITY))
        return real(obj, path)

    rundir.atomic_save = limited
    sys.exit(cli.main(sys.argv[1:]))
""")


def _check_one_line_and_previous_intact(code: int, err: str, run: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith(f"error: could not write checkpoint {run / 'last.pt'}"), err
    assert "the previous last.pt is intact" in lines[0] and f"--resume {run}" in lines[0]
    assert not (run / "last.pt.tmp").exists()
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == 1


def test_a_file_size_limit_during_a_checkpoint_is_one_line(tmp_path):
    run = tmp_path / "run"
    cfg = digits_config(tmp_path, data__val_per_class=0)
    out = subprocess.run([sys.executable, "-c", SAVE_LIMITED, "train", str(cfg), "--run-dir", str(run)],
                         capture_output=True, text=True, timeout=300)
    _check_one_line_and_previous_intact(out.returncode, out.stderr, run)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of `size` bytes mounted for the test (needs root), unmounted after."""
    mounts = []

    def mount(size: int) -> Path:
        where = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount refused'}); the file-size "
                        "limit test covers the same failure")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", str(where)], check=False)


def test_a_full_disk_during_a_checkpoint_is_one_line(tmp_path, small_tmpfs, capsys):
    cfg = digits_config(tmp_path, data__val_per_class=0)  # no best.pt: last.pt is the only large file
    probe = tmp_path / "probe"
    assert cli.main(["train", str(cfg), "--run-dir", str(probe)]) == 0
    size = (probe / "last.pt").stat().st_size
    disk = small_tmpfs(int(size * 1.5) + 256 * 1024)  # room for one last.pt and the small files, not two
    run = disk / "run"
    capsys.readouterr()
    code = cli.main(["train", str(cfg), "--run-dir", str(run)])
    _check_one_line_and_previous_intact(code, capsys.readouterr().err, run)
