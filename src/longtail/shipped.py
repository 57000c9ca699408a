"""The configs shipped inside the package, found by name from any working folder."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["CONFIG_DIR", "resolve_config_path"]

CONFIG_DIR = Path(str(resources.files("longtail") / "configs"))  # the shipped configs, inside the package


def resolve_config_path(name: str) -> Path:
    """A YAML path, else a shipped config by name (`cifar100_lt_if100_gala_reference`, with or without
    .yaml or a leading configs/), so a config is found from any working folder."""
    p = Path(name)
    if p.is_file():
        return p
    # only a bare name or configs/NAME: a path into another folder that does not exist is an error,
    # not silently the shipped config of the same file name
    shipped = Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == "configs" else p
    if len(shipped.parts) == 1:
        for candidate in (CONFIG_DIR / shipped, CONFIG_DIR / f"{shipped}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted(c.stem for c in CONFIG_DIR.glob("*.yaml"))
    hint = f" Known configs: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}" if known else ""
    raise FileNotFoundError(f"config {name!r} not found (a YAML path, or a name of a shipped config).{hint}")
