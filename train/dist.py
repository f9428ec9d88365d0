"""Which process this is under ``accelerate launch`` (torchrun's environment); 1 process otherwise.

Also what multi-process runs need beyond that: whether FSDP already checkpoints activations (so the
trainers must not ask the Trainer to), the sharding of evaluation rows over the processes
(``shard``/``unshard``) and the few collectives evaluation uses (``init_group``, ``all_gather``,
``from_main``).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that writes run files."""
    return rank() == 0


# ---------------------------------------------------------------------------------------------
# activation checkpointing: FSDP's or the Trainer's, never both
# ---------------------------------------------------------------------------------------------
def _env_flag(name: str) -> bool:
    """An environment flag as accelerate reads it (``accelerate.utils.str_to_bool``); unset: false."""
    return os.environ.get(name, "false").strip().lower() in ("y", "yes", "t", "true", "on", "1")


def fsdp_checkpoints_activations() -> bool:
    """Whether this process was launched with FSDP's own activation checkpointing: ``accelerate launch``
    with ``distributed_type: FSDP`` exports ``ACCELERATE_USE_FSDP=true`` and ``fsdp_activation_checkpointing``
    as ``FSDP_ACTIVATION_CHECKPOINTING``, which accelerate's ``FullyShardedDataParallelPlugin`` reads."""
    return _env_flag("ACCELERATE_USE_FSDP") and _env_flag("FSDP_ACTIVATION_CHECKPOINTING")


def trainer_activation_checkpointing(requested: bool | None) -> bool:
    """The Trainer's ``activation_checkpointing`` argument for a stage that asks for ``requested``: off when
    FSDP already checkpoints activations (transformers' Trainer refuses both at once, and the Trainer's own
    checkpointing under FSDP costs a redundant all-gather in the backward pass)."""
    if requested and fsdp_checkpoints_activations():
        log.info("activation checkpointing: FSDP's (fsdp_activation_checkpointing), not the Trainer's")
        return False
    return bool(requested)


# ---------------------------------------------------------------------------------------------
# evaluation over several processes
# ---------------------------------------------------------------------------------------------
def shard(rows: Sequence[T], rank: int, world: int) -> list[T]:
    """The rows process ``rank`` of ``world`` takes: every ``world``-th one from its rank (strided, so the
    shards differ in size by one at most and each gets early and late rows alike)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: rank {rank} of {world} processes")
    return list(rows[rank::world])


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """The inverse of ``shard``: ``parts[r] = shard(rows, r, len(parts))`` for every rank r -> ``rows``."""
    world = len(parts)
    out: list[Any] = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        if len(part) != len(range(r, len(out), world)):
            raise ValueError(f"unshard: part {r} has {len(part)} rows; a strided shard of {len(out)} rows over "
                             f"{world} processes has {len(range(r, len(out), world))}")
        out[r::world] = list(part)
    return out


def init_group() -> bool:
    """True when several processes run and ``torch.distributed`` is ready; when WORLD_SIZE > 1 and no one
    (a Trainer) initialised it yet, it is initialised here through accelerate's ``PartialState``, as the
    Trainer would: gloo on CPUs, nccl on GPUs (DeepSpeed's comm under a DeepSpeed launch), and this
    process's GPU selected. One process: False, nothing initialised."""
    if world_size() <= 1:
        return False
    import torch
    import torch.distributed as td

    if not td.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # as the trainers' use_cpu: gloo, not a NO-backend guess
    if not td.is_initialized():
        raise RuntimeError(f"WORLD_SIZE={world_size()} but torch.distributed could not be initialised")
    return True


def all_gather(obj: T) -> list[T]:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    import torch.distributed as td

    out: list[Any] = [None] * td.get_world_size()
    td.all_gather_object(out, obj)
    return out


def from_main(obj: T) -> T:
    """The main process's ``obj`` on every process (what only it may decide, e.g. from the run files it
    writes); ``obj`` as is with one process."""
    if not init_group():
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]
