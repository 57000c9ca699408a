"""Writing a file whole or not at all."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_replacing(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temp file beside `path`, then rename it over `path`: a crash, a full disk or
    a stop request leaves the previous `path` (or none), never a half-written one or the temp file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_replacing(path: Path, text: str) -> None:
    """`text` (UTF-8, \\n line ends) into `path` through write_replacing."""
    write_replacing(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))
