"""The CLI contract, through a subprocess."""
import json

import pytest

from conftest import family_jsonl, run_see, tree_hash, write_jsonl

COMMANDS = ["init", "add-expert", "ask", "list", "eval", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    r = run_see(command, "--help")
    assert r.returncode == 0 and "usage: see " + command in r.stdout


def test_readme_synopsis_lists_every_command_and_option():
    """The README's command synopsis is checked against the parser, so a new option cannot go undocumented."""
    import argparse
    import re
    from pathlib import Path

    from see.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Command line"):]
    block = section[section.index("```bash") + len("```bash"):section.index("```", section.index("```bash") + 7)]
    synopsis: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        m = re.match(r"see (\S+)", line)
        if m:
            name = m.group(1)
        if name and line.strip():
            synopsis[name] = synopsis.get(name, "") + " " + line
    parser, takes_overrides = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(synopsis) == set(sub.choices)
    for command, p in sub.choices.items():
        # each option's first long spelling (later ones are aliases kept for old scripts)
        options = {next(o for o in a.option_strings if o.startswith("--")) for a in p._actions
                   if a.option_strings and a.dest != "help"}
        missing = {o for o in options if not re.search(re.escape(o) + r"(?![\w-])", synopsis[command])}
        assert not missing, f"README synopsis of `see {command}` lacks {sorted(missing)}"
        assert ("key=value" in synopsis[command]) == (command in takes_overrides), command


@pytest.fixture(scope="module")
def cli_ensemble(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    path = root / "ens"
    r = run_see("init", path, "--base", tiny_llama)
    assert r.returncode == 0, r.stderr
    data = family_jsonl(root / "sentiment.jsonl", "sentiment", 120)
    neg = write_jsonl(root / "neg.jsonl", [{"input": f"What is the capital of country number {i}?"} for i in range(60)])
    cfg = root / "expert.yaml"
    cfg.write_text("train:\n  epochs: 8\n  batch_size: 16\n  lr: 0.005\nlora:\n  r: 8\n  alpha: 16\n  dropout: 0.0\n")
    r = run_see("add-expert", path, "--name", "sentiment", "--data", data, "--negatives", neg, "--config", cfg,
                "--no-progress", "--instruction", "Is the review positive or negative?", "train.seed=1")
    assert r.returncode == 0, r.stderr
    assert "added expert 'sentiment'" in r.stdout
    return path, root


def test_list_json(cli_ensemble):
    path, _ = cli_ensemble
    r = run_see("list", path, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    [e] = out["experts"]
    assert e["name"] == "sentiment" and e["examples"] == 120 and e["adapter_bytes"] > 0
    assert e["metrics"]["steps"] > 0
    assert e["metrics"]["lr"] == 0.005  # the config file's rate, as trained
    r = run_see("list", path)
    assert "sentiment" in r.stdout and "accept" in r.stdout


def test_ask_json_and_text(cli_ensemble):
    path, _ = cli_ensemble
    r = run_see("ask", path, "--json", "--max-new-tokens", "3",
                "Is the review positive or negative?\nthe soup was delicious", "What is the capital of country number 7?")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(lines) == 2 and set(lines[0]) == {"query", "answer", "expert", "scores", "prompt_tokens",
                                                 "completion_tokens", "finish_reason"}
    assert lines[0]["expert"] == "sentiment" and lines[0]["answer"] in ("positive", "negative")
    assert lines[1]["expert"] is None and "sentiment" in lines[1]["scores"]
    r = run_see("ask", path, "--max-new-tokens", "3", "Is the review positive or negative?\nthe soup was awful")
    assert r.returncode == 0 and "[expert sentiment]" in r.stdout


def test_eval_json(cli_ensemble):
    path, root = cli_ensemble
    test = family_jsonl(root / "test.jsonl", "sentiment", 30, split="test")
    r = run_see("eval", path, "--data", test, "--json", "--instruction", "Is the review positive or negative?")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["examples"] == 30 and report["metric"] == "exact_match"
    assert report["routed"]["sentiment"] >= 0.9
    # the score is the exact match of what the ensemble answers (greedy, so the Python API answers the same),
    # scored here on its own: the tiny random-init base is not asked to learn sentiment, only to be scored
    # truthfully (a ">= 50%" check here passed only while its constant answer was the test's majority label)
    from see.data import Example, Task
    from see.ensemble import Ensemble
    from see.metrics import score_answers

    rows = [json.loads(line) for line in open(test)]
    task = Task("sentiment", [Example(r["input"], (r["output"],)) for r in rows], "Is the review positive or negative?")
    answers = [g.answer for g in Ensemble.load(path).evaluate(task)["results"]]
    assert report["score"] == pytest.approx(sum(score_answers(answers, task.examples, "exact_match")) / 30)


def test_bad_input_exits_2_with_a_clear_message_and_changes_nothing(cli_ensemble, tmp_path):
    path, root = cli_ensemble
    before = tree_hash(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "c", "output": "d"\n')
    cases = [
        (["add-expert", path, "--name", "x", "--data", bad], f"{bad}:2"),
        (["add-expert", path, "--name", "sentiment", "--data", bad], "already exists"),
        (["add-expert", path, "--name", "a/b", "--data", bad], "invalid expert name"),
        (["add-expert", path, "--name", "x", "--data", tmp_path / "missing.jsonl"], "does not exist"),
        (["add-expert", path, "--name", "x", "--data", bad, "lora.r=0"], "lora.r"),
        (["ask", tmp_path, "hello"], "not an ensemble"),
    ]
    for args, needle in cases:
        r = run_see(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
        assert "Traceback" not in r.stderr
    assert tree_hash(path) == before
    r = run_see("--debug", "ask", tmp_path, "hello")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_init_refuses_an_existing_ensemble(cli_ensemble):
    path, _ = cli_ensemble
    r = run_see("init", path)
    assert r.returncode == 2 and "already an ensemble" in r.stderr
