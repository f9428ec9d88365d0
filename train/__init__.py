"""SIDReasoner trainer: align SFT, activate SFT, GRPO and evaluation with TRL."""
