"""The embedded default: a small base model, tokenizer and task families of the project's own.

Nothing here touches a model hub. ``build_base.py`` made the committed weights
in ``base/`` from text that ``families.py`` generates.
"""
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent / "base"
EMBEDDED = "embedded"
