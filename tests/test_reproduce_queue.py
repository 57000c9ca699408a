"""The reproduction queue runner (benchmarks/reproduce_cifar.py): order, skipping, resuming,
parallel runs, subsets, archiving finished runs and stopping on a failure, with a stand-in for
`longtail train`."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_cifar.py"
QUEUE = [("cifar100_lt_if100_ce", 0), ("cifar100_lt_if100_la", 0), ("cifar100_lt_if100_ala", 0)]

# Stand-in training: logs its start and end time, then finishes the run (results.json) or fails.
FAKE_TRAIN = """
import json, sys, time
from pathlib import Path
run_dir, log, code = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with open(log, "a") as f:
    f.write(json.dumps({"run": run_dir.name, "event": "start", "t": time.time()}) + "\\n")
time.sleep(0.5)
if code == 0:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps({"run": run_dir.name}))
    (run_dir / "results.md").write_text("# " + run_dir.name)
    (run_dir / "per_class.png").write_bytes(run_dir.name.encode())
    (run_dir / "best.pt").write_bytes(b"")
with open(log, "a") as f:
    f.write(json.dumps({"run": run_dir.name, "event": "end", "t": time.time()}) + "\\n")
sys.exit(code)
"""


@pytest.fixture
def queue(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("reproduce_cifar", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "QUEUE", QUEUE)
    monkeypatch.setattr(mod, "write_report", lambda out, archive: None)
    # never the repository's docs/: the archive and figure folders are the test's own
    monkeypatch.setattr(mod, "ARCHIVE", tmp_path / "archive")
    monkeypatch.setattr(mod, "FIGURES", tmp_path / "figures")
    log, commands, fail = tmp_path / "events.jsonl", [], set()
    real = mod.train_command

    def fake(config, seed, run_dir, args, threads):
        commands.append(real(config, seed, run_dir, args, threads))
        code = 3 if run_dir.name in fail else 0
        return [sys.executable, "-c", FAKE_TRAIN, str(run_dir), str(log), str(code)]

    monkeypatch.setattr(mod, "train_command", fake)

    def events():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return mod, tmp_path / "runs", commands, fail, events


def test_parallel_runs_every_pending_entry_once_at_the_same_time_with_split_threads(queue):
    mod, out, commands, _, events = queue
    (out / "cifar100_lt_if100_ce_s0").mkdir(parents=True)
    (out / "cifar100_lt_if100_ce_s0" / "results.json").write_text("{}")  # done: skipped
    (out / "cifar100_lt_if100_la_s0").mkdir()
    (out / "cifar100_lt_if100_la_s0" / "last.pt").write_bytes(b"")  # cut off: resumed
    assert mod.main(["--out", str(out), "--parallel", "2", "--threads", "2"]) == 0

    ran = [e["run"] for e in events() if e["event"] == "start"]
    # both pending entries, each once; which child process logs its start first is a race
    assert sorted(ran) == ["cifar100_lt_if100_ala_s0", "cifar100_lt_if100_la_s0"]
    resumed, started = sorted(commands, key=lambda cmd: "--resume" not in cmd)  # threads append in any order
    assert resumed[3:6] == ["train", "--resume", str(out / "cifar100_lt_if100_la_s0")]
    assert started[4].endswith("configs/cifar100_lt_if100_ala.yaml") and "seed=0" in started
    assert "eval.every=2" in started and "eval.every=2" not in resumed  # experiment keys only for new runs
    for cmd in commands:
        assert "threads=1" in cmd and "eval.batch_size=128" in cmd
    # the two ran at the same time: each started before the other ended
    t = {(e["run"], e["event"]): e["t"] for e in events()}
    assert t[(ran[0], "start")] < t[(ran[1], "end")] and t[(ran[1], "start")] < t[(ran[0], "end")]


def test_one_at_a_time_by_default(queue):
    mod, out, commands, _, events = queue
    assert mod.main(["--out", str(out), "--threads", "2"]) == 0
    ev = events()
    assert [e["run"] for e in ev if e["event"] == "start"] == [f"{c}_s{s}" for c, s in QUEUE]
    assert [e["event"] for e in ev] == ["start", "end"] * 3
    assert all("threads=2" in cmd for cmd in commands)


def test_a_failed_run_stops_the_queue_and_is_reported(queue, capsys):
    mod, out, _, fail, events = queue
    fail.add("cifar100_lt_if100_la_s0")
    assert mod.main(["--out", str(out), "--threads", "2"]) == 3
    assert [e["run"] for e in events() if e["event"] == "start"] == ["cifar100_lt_if100_ce_s0",
                                                                        "cifar100_lt_if100_la_s0"]
    assert "stopped: " + str(out / "cifar100_lt_if100_la_s0") + " exited with 3" in capsys.readouterr().out


def test_dry_run_starts_nothing(queue, capsys):
    mod, out, commands, _, events = queue
    assert mod.main(["--out", str(out), "--dry-run"]) == 0
    assert commands == [] and events() == []
    assert capsys.readouterr().out.count("start   ") == 3


def test_bad_parallel_is_refused(queue):
    mod, out, *_ = queue
    with pytest.raises(SystemExit, match="--parallel must be at least 1"):
        mod.main(["--out", str(out), "--parallel", "0"])


def test_finished_runs_are_archived_and_an_archived_run_is_done_on_a_new_machine(queue, tmp_path):
    mod, out, _, _, events = queue
    assert mod.main(["--out", str(out), "--threads", "2"]) == 0
    for config, seed in QUEUE:
        name = f"{config}_s{seed}"
        assert json.loads((tmp_path / "archive" / name / "results.json").read_text()) == {"run": name}
        assert (tmp_path / "archive" / name / "results.md").read_text() == "# " + name
        assert (tmp_path / "figures" / f"{name}_per_class.png").read_bytes() == name.encode()
    # a new machine: no run folders, only what was committed; nothing runs again
    shutil.rmtree(out)
    before = len(events())
    assert mod.main(["--out", str(out), "--threads", "2"]) == 0
    assert len(events()) == before and not out.exists()


def test_a_failed_run_is_not_archived(queue, tmp_path):
    mod, out, _, fail, _ = queue
    fail.add("cifar100_lt_if100_ce_s0")
    assert mod.main(["--out", str(out), "--threads", "2"]) == 3
    assert not (tmp_path / "archive").exists()


def test_only_runs_the_named_entries_in_queue_order(queue, capsys):
    mod, out, _, _, events = queue
    assert mod.main(["--out", str(out), "--threads", "2",
                     "--only", "cifar100_lt_if100_ala_s0", "cifar100_lt_if100_ce_s0"]) == 0
    assert [e["run"] for e in events() if e["event"] == "start"] == ["cifar100_lt_if100_ce_s0",
                                                                        "cifar100_lt_if100_ala_s0"]
    with pytest.raises(SystemExit, match="not in the queue: cifar100_lt_if100_bs_s9"):
        mod.main(["--out", str(out), "--only", "cifar100_lt_if100_bs_s9"])


def test_runs_whose_files_were_lost_count_as_done_through_their_archive(tmp_path):
    # the six IF100 seed-0 runs finished before the archive existed; their recorded figures are archived
    # in docs/results, so the queue skips them on any machine, with no list of its own
    spec = importlib.util.spec_from_file_location("reproduce_cifar", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lost = [f"cifar100_lt_if100_{m}_s0" for m in ("ce", "gala_paper", "gala_reference", "la", "ala", "bs")]
    for name in lost:
        assert "recorded_from" in json.loads((mod.ARCHIVE / name / "results.json").read_text()), name
        assert mod.state(tmp_path / name, mod.ARCHIVE) == "done"
        assert mod.state(tmp_path / name) == "start"  # without the archive it would train again
    assert mod.main(["--out", str(tmp_path / "runs"), "--dry-run", "--only", *lost]) == 0


def test_a_second_stage_waits_for_its_first_stage_and_starts_from_its_weights(queue, monkeypatch, capsys):
    mod, out, commands, fail, events = queue
    monkeypatch.setattr(mod, "WAIT_S", 0.05)
    monkeypatch.setattr(mod, "QUEUE", [("cifar100_lt_if100_gcl", 1), ("cifar100_lt_if100_gcl_stage2", 1),
                                       ("cifar100_lt_if100_ce", 0)])
    assert mod.main(["--out", str(out), "--parallel", "2", "--threads", "2"]) == 0
    t = {(e["run"], e["event"]): e["t"] for e in events()}
    # two workers, yet the second stage starts only after its first stage has finished; CE does not wait
    assert t[("cifar100_lt_if100_gcl_stage2_s1", "start")] >= t[("cifar100_lt_if100_gcl_s1", "end")]
    assert t[("cifar100_lt_if100_ce_s0", "start")] < t[("cifar100_lt_if100_gcl_s1", "end")]
    second = next(cmd for cmd in commands if "run_name=cifar100_lt_if100_gcl_stage2_s1" in cmd)
    assert f"model.init_from={out / 'cifar100_lt_if100_gcl_s1'}" in second and "seed=1" in second
    assert not any("model.init_from" in a for cmd in commands if cmd is not second for a in cmd)

    # a new machine, where the first stage is only archived (no weights): the second stage is blocked
    shutil.rmtree(out)
    shutil.rmtree(mod.ARCHIVE / "cifar100_lt_if100_gcl_stage2_s1")
    capsys.readouterr()
    assert mod.main(["--out", str(out), "--threads", "2"]) == mod.BLOCKED_EXIT
    said = capsys.readouterr().out
    assert said.count("blocked  " + str(out / "cifar100_lt_if100_gcl_stage2_s1")) == 2  # at the start and the end
    assert "run_name=cifar100_lt_if100_gcl_s1" in said

    # a first stage that finished without a checkpoint: the waiting second stage cannot start
    monkeypatch.setattr(mod, "QUEUE", [("cifar100_lt_if100_gcl", 3), ("cifar100_lt_if100_gcl_stage2", 3)])
    real = mod.train_command

    def no_weights(config, seed, run_dir, args, threads):
        cmd = real(config, seed, run_dir, args, threads)
        return cmd if "stage2" in run_dir.name else [sys.executable, "-c", "import pathlib, sys; "
                                                     "d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True); "
                                                     "(d / 'results.json').write_text('{}'); "
                                                     "(d / 'results.md').write_text('')", str(run_dir)]
    monkeypatch.setattr(mod, "train_command", no_weights)
    assert mod.main(["--out", str(out), "--threads", "2"]) == 1
    assert "blocked  " + str(out / "cifar100_lt_if100_gcl_stage2_s3") in capsys.readouterr().out
    monkeypatch.setattr(mod, "train_command", real)

    # a first stage that fails: the waiting second stage is not started
    monkeypatch.setattr(mod, "QUEUE", [("cifar100_lt_if100_gcl", 2), ("cifar100_lt_if100_gcl_stage2", 2)])
    fail.add("cifar100_lt_if100_gcl_s2")
    assert mod.main(["--out", str(out), "--parallel", "2", "--threads", "2"]) == 3
    assert "cifar100_lt_if100_gcl_stage2_s2" not in [e["run"] for e in events()]


def test_a_run_finished_in_out_but_never_archived_is_archived_not_just_skipped(queue, tmp_path, capsys):
    # the queue was stopped between a run's end and its archiving (or the run was trained by hand into
    # OUT): "done" must not mean "lost with this machine"
    mod, out, commands, _, events = queue
    run = out / "cifar100_lt_if100_la_s0"
    run.mkdir(parents=True)
    (run / "results.json").write_text('{"run": "la"}')
    (run / "results.md").write_text("# la")
    assert mod.main(["--out", str(out), "--threads", "2", "--dry-run"]) == 0
    assert "archive  " + str(run) in capsys.readouterr().out
    assert not (tmp_path / "archive" / run.name).exists()  # a dry run copies nothing
    assert mod.main(["--out", str(out), "--threads", "2"]) == 0
    assert (tmp_path / "archive" / run.name / "results.json").read_text() == '{"run": "la"}'
    assert run.name not in [e["run"] for e in events()]  # not trained again
    assert mod.main(["--out", str(out), "--threads", "2", "--dry-run"]) == 0
    assert "done     " + str(run) in capsys.readouterr().out


def test_a_run_that_exits_0_without_results_is_a_failure_not_a_silent_success(queue, monkeypatch, tmp_path):
    # archiving raised in the worker thread: the queue reported success (exit 0) and the run stayed
    # "running" forever (a second stage waiting on it would have waited for ever)
    mod, out, *_ = queue
    monkeypatch.setattr(mod, "QUEUE", [("cifar100_lt_if100_ce", 0), ("cifar100_lt_if100_la", 0)])
    monkeypatch.setattr(mod, "train_command", lambda config, seed, run_dir, args, threads:
                        [sys.executable, "-c", "pass"])
    assert mod.main(["--out", str(out), "--threads", "2"]) == 1
    assert not (tmp_path / "archive").exists()


# Stand-in for a training interrupted by SIGINT: it writes its "checkpoint" and exits as longtail
# train does when stopped.
INTERRUPTIBLE_TRAIN = """
import signal, sys, time
from pathlib import Path
run_dir = Path(sys.argv[1])
run_dir.mkdir(parents=True, exist_ok=True)
def stop(*_):
    time.sleep(1)  # a checkpoint takes a while: the queue must wait for it
    (run_dir / "last.pt").write_bytes(b"checkpoint")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
(run_dir / "started").write_text("")
time.sleep(60)
"""

DRIVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("reproduce_cifar", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.QUEUE = [("cifar100_lt_if100_ce", 0), ("cifar100_lt_if100_la", 0), ("cifar100_lt_if100_ala", 0)]
mod.train_command = lambda config, seed, run_dir, args, threads: [sys.executable, "-c", sys.argv[2], str(run_dir)]
sys.exit(mod.main(["--out", sys.argv[3], "--parallel", "2", "--threads", "2",
                   "--archive", sys.argv[4], "--figures", sys.argv[4]]))
"""


def test_an_interrupt_stops_every_run_with_its_checkpoint_and_exits_cleanly(tmp_path):
    # `timeout -s INT` (benchmarks/gpu_queue.sh) signals the whole process group: the queue used to
    # die with a traceback; it now waits for its trainings to checkpoint and says how to resume
    import os
    import signal
    import subprocess
    import time

    out, archive, log = tmp_path / "runs", tmp_path / "archive", tmp_path / "queue.log"
    # output to a file, not a pipe: the trainings would hold a pipe open, and reading it to its end
    # would wait for them even if the queue had not
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(SCRIPT), INTERRUPTIBLE_TRAIN, str(out), str(archive)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    runs = [out / "cifar100_lt_if100_ce_s0", out / "cifar100_lt_if100_la_s0"]
    deadline = time.time() + 60
    while not all((r / "started").exists() for r in runs) and time.time() < deadline:
        time.sleep(0.05)
    assert all((r / "started").exists() for r in runs), log.read_text()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    # the queue ended only after both trainings had written their checkpoints
    assert all((r / "last.pt").exists() for r in runs)
    text = log.read_text()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "run this script again to resume" in text
    assert all((r / "last.pt").read_bytes() == b"checkpoint" for r in runs)
    assert not (out / "cifar100_lt_if100_ala_s0").exists()  # the third never started
    assert not archive.exists()
