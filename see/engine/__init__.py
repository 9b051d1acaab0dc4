"""The inference floor: prefill/decode and the multi-LoRA forward that experts, routing and baselines share."""
