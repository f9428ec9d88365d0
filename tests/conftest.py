"""Shared test set-up: offline everywhere, small thread counts, the shared data's path."""
import os
from pathlib import Path

import pytest

# Nothing in the tests may reach a hub or the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_OFFICE = REPO.parent / "shared" / "data" / "amazon18" / "Office_Products"


@pytest.fixture(scope="session")
def shared_office() -> Path:
    if not (SHARED_OFFICE / "item.json").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the shared Office data at {SHARED_OFFICE}")
        pytest.skip(f"shared Office data not found at {SHARED_OFFICE}")
    return SHARED_OFFICE
