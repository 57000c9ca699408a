"""What a run shows and records while it trains: a progress line on a terminal, a readable line per
epoch elsewhere, the metrics log, tensorboard, and a warning when the CPU is taken away."""
from __future__ import annotations

import sys
from pathlib import Path

from longtail.rundir import MetricsLog
from longtail.threads import RateWatch


def epoch_line(record: dict, epochs: int) -> str:
    """One epoch, readable: `epoch 3/200  loss 3.7941  train 6.6%  val 7.2%  241 img/s  44.8 s`."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}", f"train {record['train_acc']:.1f}%"]
    if "val_acc" in record:
        parts.append(f"val {record['val_acc']:.1f}%")
    return "  ".join(parts + [f"{record['images_per_s']:.0f} img/s", f"{record['time_s']:.1f} s"])


class RunOutput:
    """The run's outputs on the main process (every method is a no-op elsewhere).

    mode: "bar" (a line rewritten in place), "log" (a line per epoch), "quiet", or "auto": the bar on
    a terminal, else the log lines. metrics.jsonl keeps every value in full whatever the mode."""

    def __init__(self, run_dir: Path, mode: str, main: bool, epochs: int, resume_from_epoch: int | None,
                 tensorboard: bool, threads: int | None):
        self.main, self.epochs, self.mode = main, epochs, mode
        self.bar = main and (mode == "bar" or (mode == "auto" and sys.stderr.isatty()))
        self.log = MetricsLog(run_dir, resume_from_epoch) if main else None
        self.writer = None
        if tensorboard and main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.watch = RateWatch(threads, str(run_dir)) if main and threads else None

    def step_line(self, text: str) -> None:
        if self.bar:
            sys.stderr.write("\r" + text[:150].ljust(150))
            sys.stderr.flush()

    def epoch_done(self, record: dict) -> None:
        if not self.main:
            return
        self.log.write(record)
        if self.writer:
            for k, v in record.items():
                if k != "epoch":
                    self.writer.add_scalar(k, v, record["epoch"])
        if self.bar:
            self.step_line(epoch_line(record, self.epochs))
        elif self.mode != "quiet":
            print(epoch_line(record, self.epochs), flush=True)

    def close(self) -> None:
        """End the progress line and close the files; a second call does nothing."""
        if self.bar:
            sys.stderr.write("\n")
            self.bar = False
        if self.log:
            self.log.close()
            self.log = None
        if self.writer:
            self.writer.close()
            self.writer = None
