"""Experts: task reconstruction and LoRA training."""
