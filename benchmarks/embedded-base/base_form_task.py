"""Rewrite an add or subtract task into the base's own form, to train an expert on it.

    python benchmarks/embedded-base/base_form_task.py IN OUT.jsonl --op sum|difference

Each query becomes its first two numbers in the form pretraining states (``244 + 502 =``,
``635 - 591 =``), with the task's own answer. An expert trained on this file is asked exactly what
``probe_skills.py --sums`` asks its base, plus the expert's prompt template: set side by side, the two
say whether the template, not the user's wording, is what the expert cannot get past (README.md here).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from probe_skills import base_form  # this folder is on sys.path when the script runs


def main(argv: list[str] | None = None) -> None:
    from see.data import load_task

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="the task file (any format see add-expert reads)")
    p.add_argument("out", type=Path, help="JSONL to write")
    p.add_argument("--op", choices=["sum", "difference"], required=True)
    args = p.parse_args(argv)
    rows = [{"input": base_form(ex.input, args.op), "output": ex.outputs[0]} for ex in load_task(args.source).examples]
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{len(rows)} queries -> {args.out}")


if __name__ == "__main__":
    main()
