"""Which process this is under ``accelerate launch`` (torchrun's environment); 1 process otherwise."""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that writes run files and evaluates."""
    return rank() == 0
