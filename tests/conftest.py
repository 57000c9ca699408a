import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LONGTAIL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the checkout (../shared/data); CI has it too."""
    if not (SHARED_DATA / "cifar-100-python").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set LONGTAIL_SHARED_DATA to the shared/data folder")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep tests from oversubscribing them.
    torch.set_num_threads(2)
    yield


def markdown_rows(text: str, header: str) -> list[dict[str, str]]:
    """The data rows of the markdown table in `text` whose header line starts with `header`, as
    {column: cell} dicts; the table ends at its first line that is not a row."""
    lines = text[text.index(header):].splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:  # after the header and its |---| rule
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")))))
    return rows


# A fresh interpreter (python -I: no PYTHONPATH, no user site) where importing longtail fails: it loads
# the TorchScript file argv[1], scores the uint8 images saved in argv[2] and saves the scores to argv[3].
SCORE_WITHOUT_LONGTAIL = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "longtail":
            raise ImportError("longtail is not importable here")
sys.meta_path.insert(0, Block())
try:
    import longtail
    sys.exit("longtail was importable")
except ImportError:
    pass
import torch
torch.set_num_threads(1)
model = torch.jit.load(sys.argv[1])
torch.save(model(torch.load(sys.argv[2])), sys.argv[3])
"""
