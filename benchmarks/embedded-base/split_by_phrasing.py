"""Split the subtract task's CSV by whether its phrasing names the operands in swapped order.

*subtract 87 from 512* and *take 87 away from 512* put the subtrahend first; every other phrasing of
`make_tasks.py` (`512 - 87=`, `512 minus 87`, *difference between 512 and 87?*, *what is 512 - 87?*) keeps
the base's order. Used to see which phrasings an expert loses (benchmarks/embedded-base/README.md).

    python benchmarks/embedded-base/split_by_phrasing.py benchmarks/user-tasks/data/subtract_numbers.test.csv OUT_PREFIX
    # writes OUT_PREFIX.swapped.csv and OUT_PREFIX.in_order.csv
"""
import argparse
import csv
from pathlib import Path


def is_swapped(query: str) -> bool:
    q = query.lower()
    return "subtract" in q or "away" in q


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a CSV with input,output columns")
    p.add_argument("prefix", help="output path prefix")
    args = p.parse_args(argv)
    with args.source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for name, keep in (("swapped", True), ("in_order", False)):
        out = Path(f"{args.prefix}.{name}.csv")
        picked = [r for r in rows if is_swapped(r["input"]) == keep]
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["input", "output"])
            w.writeheader()
            w.writerows({"input": r["input"], "output": r["output"]} for r in picked)
        print(f"{len(picked)} rows -> {out}")


if __name__ == "__main__":
    main()
