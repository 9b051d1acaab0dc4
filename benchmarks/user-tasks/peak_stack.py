"""Where an add-expert's memory peaks: one suite task added again in-process, its RSS sampled.

    python benchmarks/user-tasks/peak_stack.py WORK TASK DEST [--step MiB] [--json FILE] [key=value ...]

WORK is a finished ``run.py --work`` folder. Its ensemble is copied into DEST with only the experts added
before TASK (as ``one_more.py`` does), and TASK is added to the copy by ``see add-expert`` in this process
while a thread reads the process's resident size every 20 ms. Each time it has grown ``--step`` MiB past the
last mark, the seconds, the size and the innermost frames of ``see/`` the main thread is in are printed (and
written to ``--json``). ``ru_maxrss`` says how high; this says where.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from one_more import truncated_copy  # noqa: E402
from run import field_flags, load_index  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def sample_peaks(stop: threading.Event, marks: list[dict], step: int, main_id: int) -> None:
    start, last = time.time(), 0
    while not stop.is_set():
        size = _rss()
        if size > last + step:
            last = size
            frame = sys._current_frames().get(main_id)
            stack = traceback.extract_stack(frame) if frame is not None else []
            marks.append({"seconds": round(time.time() - start, 2), "rss_mib": round(size / 2**20),
                          "frames": [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack
                                     if f"{Path('see')}/" in f.filename][-4:]})
        stop.wait(0.02)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path, help="a finished run.py --work folder")
    p.add_argument("task", help="the suite task to add again")
    p.add_argument("dest", type=Path, help="where the copy of the ensemble goes (replaced)")
    p.add_argument("--step", type=float, default=25.0, help="MiB of growth between two marks")
    p.add_argument("--json", type=Path, help="write the marks here")
    args, overrides = p.parse_known_args(argv)
    if not Path("/proc/self/statm").is_file():
        raise SystemExit("peak_stack.py: reads /proc/self/statm, which this system does not have")
    spec = load_index()[args.task]
    if args.dest.exists():
        shutil.rmtree(args.dest)
    truncated_copy(args.work / "ensemble", args.task, args.dest)
    from see.cli import main as see_main

    marks: list[dict] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_peaks, args=(stop, marks, int(args.step * 2**20),
                                                          threading.main_thread().ident), daemon=True)
    sampler.start()
    try:
        code = see_main(["add-expert", str(args.dest), "--name", args.task, "--data", str(HERE / spec["train"]),
                         "--no-progress", *field_flags(spec), *overrides])
    finally:
        stop.set()
        sampler.join()
    if code:
        raise SystemExit(f"peak_stack.py: see add-expert exited {code}")
    for m in marks:
        print(f"{m['seconds']:8.1f} s {m['rss_mib']:6d} MiB  " + " < ".join(reversed(m["frames"])))
    if args.json:
        args.json.write_text(json.dumps(marks, indent=1) + "\n")
    return marks


if __name__ == "__main__":
    main()
