"""Experts: task reconstruction and LoRA training."""
from see.experts.reconstruction import RehearsalBuffer, TrainingExample, reconstruct_task

__all__ = ["RehearsalBuffer", "TrainingExample", "reconstruct_task", "train_expert"]


def __getattr__(name):  # training pulls in torch/peft/accelerate: import it on first use
    if name == "train_expert":
        from see.experts.training import train_expert

        return train_expert
    raise AttributeError(name)
