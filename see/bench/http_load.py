"""HTTP load check of ``see serve``: many concurrent clients against a real server process.

    python -m see.bench.http_load                    # builds a 3-expert ensemble on the embedded base
    python -m see.bench.http_load --dir ENSEMBLE --clients 64 --seconds 60

The server runs in a subprocess (:func:`see.serve.serve`) on 127.0.0.1. The
clients are asyncio tasks in this process sharing one httpx connection pool;
each sends short chat completions (the experts' tasks in turn, instruction as
the system message) back to back until the time is up. Every request has a
timeout, and the server gets one to start and one to stop, so a run ends.

Writes ``results.json`` and ``report.md``: latency p50/p99 of the answered
requests, requests per second, errors by kind, the server's mean batch size,
the share of answers from the query's own expert, the peak RSS of the server
process (``VmHWM``), and the command that produced them. Clients and server
share the machine's cores, so the figures understate the server alone.
Needs httpx (the ``test`` extra).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import httpx

from see.jsonio import strict_json

OUT = Path("benchmarks/results/serving/http-load")
FAMILIES = ("sentiment", "topic", "antonym")
#: Short training: an expert learns to accept its own task (30 steps at the default lr did not), not yet to
#: reject the others, so the newest expert may answer everything. The check measures serving, not routing.
TRAIN = ("train.max_steps=60", "train.lr=3e-3")


def expert_names(dir: Path) -> list[str]:
    """From the documented manifest.json layout, without loading any model."""
    return [e["name"] for e in json.loads((dir / "manifest.json").read_text())["experts"]]


def build_ensemble(path: Path, families: Sequence[str] = FAMILIES, examples: int = 200,
                   overrides: Sequence[str] = TRAIN, log: Callable[[str], None] = print) -> Path:
    """An ensemble on the embedded base with one expert per family; experts already there are kept."""
    from see.embedded.families import make_task
    from see.lifecycle import add_expert, init_ensemble

    if not (path / "manifest.json").is_file():
        init_ensemble(path, log=log)
    have = set(expert_names(path))
    for k, family in enumerate(families):
        if family not in have:
            started = time.time()
            add_expert(path, family, make_task(family, examples, seed=k, split="train"), overrides=list(overrides),
                       progress=False, log=lambda m: None)
            log(f"expert '{family}' trained in {time.time() - started:.0f}s")
    return path


def queries(dir: Path, count: int = 60) -> list[tuple[str, list[dict]]]:
    """(family, chat messages) for the test split of each expert's family, round robin."""
    from see.embedded.families import FAMILIES as KNOWN, make_task

    families = [name for name in expert_names(dir) if name in KNOWN] or list(FAMILIES)
    tasks = [make_task(f, count, seed=1000, split="test") for f in families]
    return [(f, [{"role": "system", "content": t.instruction}, {"role": "user", "content": t.examples[i].input}])
            for i in range(count) for f, t in zip(families, tasks)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(dir: Path, port: int, options: dict, log_file: Path, timeout: float = 180) -> subprocess.Popen:
    """``serve(dir)`` in a fresh Python process, returned once /health answers."""
    code = ("import json, sys\nfrom see.serve import serve\n"
            "serve(sys.argv[1], port=int(sys.argv[2]), log_level='warning', **json.loads(sys.argv[3]))\n")
    with open(log_file, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, str(dir), str(port), json.dumps(options)],
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}:\n{log_file.read_text()[-4000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f}s; log: {log_file}")


def stop_server(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Ctrl-C (uvicorn finishes requests in flight), then a kill if it hangs."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    """Peak resident memory (bytes) of a live process, from ``VmHWM``."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


async def _clients(url: str, model: str, work: list[tuple[str, list[dict]]], clients: int, seconds: float,
                   max_tokens: int, request_timeout: float) -> tuple[list[dict], float]:
    """Each client sends requests back to back until ``seconds`` pass; -> (one record per request, seconds)."""
    records: list[dict] = []
    # drop idle connections before uvicorn does (its keep-alive timeout is 5 s, as is httpx's default): when
    # both expire together, a request can go out on a connection the server is closing and fail with ReadError
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=request_timeout) as http:
        loop = asyncio.get_running_loop()
        started = loop.time()
        end = started + seconds

        async def client(k: int) -> None:
            i = k
            while loop.time() < end:
                family, messages = work[i % len(work)]
                i += clients
                sent = loop.time()
                record = {"family": family}
                try:
                    r = await http.post("/v1/chat/completions",
                                        json={"model": model, "messages": messages, "max_tokens": max_tokens})
                    record["status"] = r.status_code
                    if r.status_code == 200:
                        body = r.json()
                        record["expert"] = body["see"]["expert"]
                        record["completion_tokens"] = body["usage"]["completion_tokens"]
                except httpx.HTTPError as exc:
                    record["status"] = type(exc).__name__
                record["latency_s"] = loop.time() - sent
                records.append(record)

        await asyncio.gather(*(client(k) for k in range(clients)))
        return records, loop.time() - started


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run_load(dir: Path, out: Path = OUT, clients: int = 64, seconds: float = 60, max_tokens: int = 8,
             serve_options: dict | None = None, request_timeout: float = 60, command: str = "",
             log: Callable[[str], None] = print) -> dict:
    from see import __version__

    dir = Path(dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    options = {"max_batch": 32, "queue_size": 256, "batch_wait_ms": 5.0, **(serve_options or {})}
    model = dir.name
    work = queries(dir)
    load_before = os.getloadavg()[0]  # other processes on the machine skew the figures; say how busy it was
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log(f"starting the server on {url} ({options})")
    proc = start_server(dir, port, options, out / "server.log")
    try:
        for _, messages in work[:4]:  # first requests pay for lazy initialisation; keep them out
            httpx.post(url + "/v1/chat/completions", json={"model": model, "messages": messages,
                                                           "max_tokens": max_tokens}, timeout=request_timeout)
        before = httpx.get(url + "/health").json()
        log(f"{clients} clients for {seconds:.0f}s ...")
        server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
        records, elapsed = asyncio.run(_clients(url, model, work, clients, seconds, max_tokens, request_timeout))
        server_cpu, client_cpu = cpu_seconds(proc.pid) - server_cpu, time.process_time() - client_cpu
        health = httpx.get(url + "/health").json()
        rss = peak_rss(proc.pid)
    finally:
        stop_server(proc)
    ok = [r for r in records if r["status"] == 200]
    latencies = sorted(r["latency_s"] for r in ok)
    errors: dict[str, int] = {}
    for r in records:
        if r["status"] != 200:
            errors[str(r["status"])] = errors.get(str(r["status"]), 0) + 1
    routed: dict[str, dict[str, int]] = {}
    for r in ok:
        by_expert = routed.setdefault(r["family"], {})
        # "(fallback)" cannot be an expert's name
        expert = r["expert"] or "(fallback)"
        by_expert[expert] = by_expert.get(expert, 0) + 1
    calls = health["generate_calls"] - before["generate_calls"]
    answered = health["answered"] - before["answered"]
    results = {
        "command": command, "ensemble": str(dir), "experts": health["experts"], "clients": clients,
        "seconds": seconds, "elapsed_s": round(elapsed, 2), "max_tokens": max_tokens, "serve_options": options,
        "requests": len(records), "answered": len(ok), "errors": sum(errors.values()), "errors_by_kind": errors,
        "requests_per_s": len(ok) / elapsed if elapsed else None,
        "latency_p50_s": _percentile(latencies, 50), "latency_p99_s": _percentile(latencies, 99),
        "latency_max_s": latencies[-1] if latencies else None,
        "completion_tokens_per_s": sum(r["completion_tokens"] for r in ok) / elapsed if elapsed else None,
        "mean_batch_size": answered / calls if calls else None, "generate_calls": calls,
        "routed_to_own_expert": sum(r["expert"] == r["family"] for r in ok) / len(ok) if ok else None,
        "answers_by_family_and_expert": routed,
        "cpu_s": {"server": round(server_cpu, 1), "clients": round(client_cpu, 1)},
        "server_peak_rss_bytes": rss,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "see": __version__, "load_average_before": load_before},
    }
    (out / "results.json").write_text(strict_json(results, indent=2) + "\n")
    (out / "report.md").write_text(report(results))
    return results


def report(r: dict) -> str:
    ms = lambda s: "-" if s is None else f"{1000 * s:.0f} ms"  # noqa: E731
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors_by_kind"].items())) or "none"
    routed = "-" if r["routed_to_own_expert"] is None else f"{100 * r['routed_to_own_expert']:.1f}%"
    batch = "-" if r["mean_batch_size"] is None else f"{r['mean_batch_size']:.1f}"
    opts = r["serve_options"]
    experts = sorted({e for counts in r["answers_by_family_and_expert"].values() for e in counts})
    return "\n".join([
        "# HTTP load check of `see serve`", "",
        f"Produced by `{r['command'] or 'python -m see.bench.http_load'}` on {r['machine']['platform']} "
        f"({r['machine']['cpus']} CPUs, Python {r['machine']['python']}, see {r['machine']['see']}; 1-minute load "
        f"average {r['machine']['load_average_before']:.1f} before the run).", "",
        f"{r['clients']} concurrent clients sent chat completions (max_tokens {r['max_tokens']}) back to back "
        f"for {r['seconds']:.0f} s to a server in its own process on 127.0.0.1, serving an ensemble of "
        f"{r['experts']} experts on the embedded base (max_batch {opts['max_batch']}, queue_size "
        f"{opts['queue_size']}, batch_wait_ms {opts['batch_wait_ms']}). Clients and server shared the machine's "
        "cores.", "",
        "| figure | value |", "|---|---|",
        f"| requests answered | {r['answered']} of {r['requests']} |",
        f"| requests/s | {r['requests_per_s']:.1f} |",
        f"| latency p50 | {ms(r['latency_p50_s'])} |",
        f"| latency p99 | {ms(r['latency_p99_s'])} |",
        f"| latency max | {ms(r['latency_max_s'])} |",
        f"| errors | {r['errors']} ({errors}) |",
        f"| completion tokens/s | {r['completion_tokens_per_s']:.0f} |",
        f"| mean requests per generate call | {batch} ({r['generate_calls']} calls) |",
        f"| answers from the query's own expert | {routed} |",
        f"| CPU seconds: server / clients | {r['cpu_s']['server']:.0f} / {r['cpu_s']['clients']:.0f} |",
        f"| server peak RSS (VmHWM) | {r['server_peak_rss_bytes'] / 2 ** 20:.0f} MiB |", "",
        "Latency is from sending a request to receiving its whole answer, over answered requests. "
        "Completion tokens include an expert's routing token.", "",
        "Answers by query family (rows) and the expert that gave them:", "",
        "| family | " + " | ".join(experts) + " |", "|---" * (len(experts) + 1) + "|",
        *(f"| {family} | " + " | ".join(str(counts.get(e, 0)) for e in experts) + " |"
          for family, counts in sorted(r["answers_by_family_and_expert"].items())), ""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m see.bench.http_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, help="ensemble to serve (default: build one on the embedded base in --work)")
    p.add_argument("--work", type=Path, help="where to build the ensemble (reused when present; default: a temp dir)")
    p.add_argument("--experts", nargs="+", default=list(FAMILIES), help="families of the experts to build")
    p.add_argument("--train", nargs="+", default=list(TRAIN), metavar="KEY=VALUE",
                   help=f"config overrides for the built experts (default: {' '.join(TRAIN)})")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--queue-size", type=int, default=256)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = p.parse_args(argv)
    dir = args.dir
    if dir is None:
        work = args.work or Path(tempfile.mkdtemp(prefix="see-http-load-"))
        dir = build_ensemble(work / "ensemble", args.experts, overrides=args.train)
    command = "python -m see.bench.http_load " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    r = run_load(dir, args.out, args.clients, args.seconds, args.max_tokens,
                 {"max_batch": args.max_batch, "queue_size": args.queue_size, "batch_wait_ms": args.batch_wait_ms},
                 command=command.strip())
    print(report(r))
    print(f"written: {args.out / 'report.md'}, {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
