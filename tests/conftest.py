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
