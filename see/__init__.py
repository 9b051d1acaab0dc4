"""see: continual fine-tuning of LLMs with a Sequential Ensemble of Experts."""
__version__ = "0.1.0"

__all__ = ["Ensemble", "GenerationResult", "RouteDecision", "Task", "Example", "__version__"]


def __getattr__(name):  # keep `import see` light: torch and transformers load on first use
    if name in ("Ensemble", "GenerationResult", "RouteDecision"):
        from see import ensemble

        return getattr(ensemble, name)
    if name in ("Task", "Example"):
        from see import data

        return getattr(data, name)
    raise AttributeError(name)
