"""The multi-GPU launch configs as accelerate reads them (no GPU, no DeepSpeed needed), and train.dist's
choice between FSDP's activation checkpointing and the Trainer's.

The launch environment is computed by accelerate's own launcher code (``_validate_launch_command`` and
``prepare_deepspeed_cmd_env`` / ``prepare_multi_gpu_env``, what ``accelerate launch --config_file`` exports
to every process), then the plugins every process builds from it are built here."""
import json
import re
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from train.dist import fsdp_checkpoints_activations, trainer_activation_checkpointing

ROOT = Path(__file__).resolve().parent.parent
ZERO2_YAML = ROOT / "configs/accelerate/zero2.yaml"
FSDP_YAML = ROOT / "configs/accelerate/fsdp.yaml"
ZERO2_JSON = ROOT / "configs/deepspeed/zero2.json"
# What transformers' Trainer fills in a DeepSpeed config ("auto"; HfTrainerDeepSpeedConfig.trainer_config_process)
TRAINER_FILLS = {"train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                 "gradient_clipping", "bf16.enabled", "fp16.enabled"}
# accelerate config keys refused beside a deepspeed_config_file (DeepSpeedPlugin._deepspeed_config_checks)
REFUSED_WITH_FILE = {"gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                     "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
                     "zero3_save_16bit_model", "mixed_precision"}


def launch_env(config: Path) -> dict[str, str]:
    """The ACCELERATE_*/FSDP_* variables ``accelerate launch --config_file config`` gives each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", "2",
                                               "-m", "train", "run"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate's launch_command does before deepspeed_launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.delenv(k)
    monkeypatch.chdir(ROOT)  # the yaml names the JSON relative to the launch directory
    return monkeypatch


def dotted(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_zero2_json_overlaps_communication_with_explicit_buckets():
    ds = json.loads(ZERO2_JSON.read_text())
    zero = ds["zero_optimization"]
    assert zero["stage"] == 2 and zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    for key in ("reduce_bucket_size", "allgather_bucket_size"):  # integers (elements), not "auto"
        assert isinstance(zero[key], int) and zero[key] == 200_000_000
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    assert ds["bf16"]["enabled"] == "auto"
    auto = {k for k, v in dotted(ds).items() if v == "auto"}
    assert auto == {"bf16.enabled", "train_micro_batch_size_per_gpu", "train_batch_size",
                    "gradient_accumulation_steps", "gradient_clipping"}
    assert auto <= TRAINER_FILLS  # every "auto" is one the Trainer fills


def test_zero2_yaml_points_at_the_json_and_keeps_out_what_accelerate_refuses_with_it():
    import yaml

    cfg = yaml.safe_load(ZERO2_YAML.read_text())
    assert cfg["distributed_type"] == "DEEPSPEED"
    assert (ROOT / cfg["deepspeed_config"]["deepspeed_config_file"]).resolve() == ZERO2_JSON
    assert not (set(cfg["deepspeed_config"]) | set(cfg)) & REFUSED_WITH_FILE


def test_zero2_launch_builds_accelerates_deepspeed_plugin(clean_env):
    from accelerate.utils import DeepSpeedPlugin

    env = launch_env(ZERO2_YAML)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == "configs/deepspeed/zero2.json"
    for k, v in env.items():
        clean_env.setenv(k, v)
    plugin = DeepSpeedPlugin()  # what every process builds: reads the JSON, refuses conflicting yaml keys
    assert plugin.zero_stage == 2 and plugin.offload_optimizer_device == "none"
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["overlap_comm"] and zero["reduce_bucket_size"] == zero["allgather_bucket_size"] == 200_000_000
    plugin.set_mixed_precision("bf16")  # the Accelerator's call, with the Trainer's mixed_precision (bf16=True)
    assert plugin.deepspeed_config["bf16"]["enabled"] is True and plugin.deepspeed_config["fp16"]["enabled"] is False

    # The check is live: a ZeRO key beside the file (the old inline yaml's zero_stage) is refused.
    clean_env.setenv("ACCELERATE_CONFIG_DS_FIELDS", env["ACCELERATE_CONFIG_DS_FIELDS"] + ",zero_stage")
    with pytest.raises(ValueError, match="deepspeed_config_file"):
        DeepSpeedPlugin()


def test_fsdp_launch_checkpoints_activations_in_fsdp_and_not_in_the_trainer(clean_env, tmp_path):
    from accelerate.utils import FullyShardedDataParallelPlugin

    env = launch_env(FSDP_YAML)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_ACTIVATION_CHECKPOINTING"] == "true"
    for k, v in env.items():
        clean_env.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.activation_checkpointing is True and plugin.fsdp_version == 2
    assert fsdp_checkpoints_activations()
    assert trainer_activation_checkpointing(True) is False  # transformers' Trainer refuses both at once

    from train.config import AlignConfig
    from train.sft import sft_args

    args = sft_args(AlignConfig.tiny().override(activation_checkpointing=True).resolved(), tmp_path, False)
    assert args.activation_checkpointing is False


@pytest.mark.parametrize("env, fsdp", [
    ({}, False),
    ({"ACCELERATE_USE_FSDP": "true"}, False),  # FSDP without its activation checkpointing
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_ACTIVATION_CHECKPOINTING": "false"}, False),
    ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, False),  # a stray variable without FSDP (DDP, DeepSpeed)
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_ACTIVATION_CHECKPOINTING": "true"}, True),
    ({"ACCELERATE_USE_FSDP": "TRUE", "FSDP_ACTIVATION_CHECKPOINTING": "1"}, True),
])
def test_activation_checkpointing_is_fsdps_or_the_trainers(clean_env, env, fsdp):
    for k, v in env.items():
        clean_env.setenv(k, v)
    assert fsdp_checkpoints_activations() is fsdp
    assert trainer_activation_checkpointing(True) is (not fsdp)
    assert trainer_activation_checkpointing(False) is False


def test_gpu_extra_deepspeed_floor_matches_trl():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ours = next(Requirement(r) for r in extras["gpu"] if Requirement(r).name == "deepspeed")
    trls = [Requirement(r) for r in requires("trl") or [] if re.match(r"deepspeed\b", r)]
    assert trls, "TRL's metadata names no deepspeed requirement"
    floor = max(Version(s.version) for r in trls for s in r.specifier if s.operator == ">=")
    assert [s.operator for s in ours.specifier] == [">="] and Version(next(iter(ours.specifier)).version) == floor
