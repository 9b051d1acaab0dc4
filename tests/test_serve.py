"""`see serve`: the real uvicorn server on a free local port, driven by the official OpenAI client."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from openai import OpenAI

from conftest import TINY_TRAIN, family_jsonl, tree_hash
from see.data import load_task
from see.embedded.families import make_task
from see.ensemble import Ensemble
from see.lifecycle import add_expert, init_ensemble
from see.errors import ConfigError, StoreError
from see.serve import create_app

TRAIN = TINY_TRAIN + ["train.max_steps=4"]
SENTIMENT = make_task("sentiment", 1).instruction


def _add(path: Path, family: str, data_dir: Path) -> None:
    task = load_task(family_jsonl(data_dir / f"{family}.jsonl", family, 40), name=family)
    add_expert(path, family, task, overrides=TRAIN, progress=False, log=lambda m: None)


def _build(root: Path, tiny_llama: Path, overrides=()) -> Path:
    path = root / "tiny-ens"
    init_ensemble(path, base=str(tiny_llama), overrides=list(overrides), log=lambda m: None)
    _add(path, "sentiment", root)
    return path


@pytest.fixture(scope="module")
def ensemble(tiny_llama, tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("serve"), tiny_llama)


@contextlib.contextmanager
def running(path: Path, **options):
    """uvicorn serving ``create_app(path)`` in a thread on a free port; yields (base URL, service)."""
    app = create_app(path, **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.service
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def server(ensemble):
    with running(ensemble) as (url, service):
        yield url, service


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def slow_generate(monkeypatch, request):
    """Ensemble.generate, slowed (by the fixture's param, in seconds) so requests pile up; records each call's
    batch size and max_new_tokens."""
    delay = getattr(request, "param", 0.5)
    calls: list[tuple[int, int]] = []
    original = Ensemble.generate

    def slow(self, queries, *args, **kwargs):
        calls.append((len(queries), kwargs["max_new_tokens"]))
        time.sleep(delay)
        return original(self, queries, *args, **kwargs)

    monkeypatch.setattr(Ensemble, "generate", slow)
    return calls


def _direct(service, queries, **kwargs):
    return service.loaded.ens.generate(queries, **kwargs)


def test_models_and_health(server, client):
    url, service = server
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-ens"]
    stored = json.loads((service.root / "manifest.json").read_text())["experts"]
    assert models.data[0].see_experts == [{"name": "sentiment", "threshold": stored[0]["threshold"]}]
    assert client.models.retrieve("tiny-ens").id == "tiny-ens"
    health = httpx.get(url + "/health")
    assert health.status_code == 200 and health.json()["experts"] == 1 and health.json()["model"] == "tiny-ens"


def test_completion_matches_generate(server, client):
    _, service = server
    r = client.completions.create(model="tiny-ens", prompt="great soup", max_tokens=6)
    ref = _direct(service, ["great soup"], max_new_tokens=6)[0]
    choice = r.choices[0]
    assert r.object == "text_completion" and r.model == "tiny-ens" and r.id.startswith("cmpl-")
    assert choice.text == ref.answer and choice.finish_reason == ref.finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (ref.prompt_tokens, ref.completion_tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.see["expert"] == ref.expert and r.see["scores"] == pytest.approx(ref.scores)
    # newest first: the only expert is always consulted
    assert set(r.see["scores"]) == {"sentiment"} and 0.0 <= r.see["scores"]["sentiment"] <= 1.0
    manifest = (service.root / "manifest.json").read_bytes()
    assert r.system_fingerprint == hashlib.sha256(manifest).hexdigest()[:16]


def test_chat_matches_generate_with_system_as_instruction(client, server):
    _, service = server
    messages = [{"role": "system", "content": SENTIMENT}, {"role": "user", "content": "an old answer"},
                {"role": "assistant", "content": "positive"}, {"role": "user", "content": "the soup was cold"}]
    r = client.chat.completions.create(model="tiny-ens", messages=messages, max_completion_tokens=5)
    ref = _direct(service, [{"instruction": SENTIMENT, "input": "the soup was cold"}], max_new_tokens=5)[0]
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.answer and r.usage.prompt_tokens == ref.prompt_tokens
    assert r.see["expert"] == ref.expert
    parts = client.chat.completions.create(model="tiny-ens", max_tokens=5, messages=[
        {"role": "system", "content": [{"type": "text", "text": SENTIMENT}]},
        {"role": "user", "content": [{"type": "text", "text": "the soup was cold"}]}])
    assert parts.choices[0].message.content == ref.answer


def test_prompt_that_exactly_fits_the_context_is_served_uncut(client, server):
    _, service = server
    text = "soup " * 40
    counted = service.loaded.prompt_tokens(None, text)
    room = service.loaded.context - 1 - counted
    r = client.completions.create(model="tiny-ens", prompt=text, max_tokens=room)
    assert r.usage.prompt_tokens == counted  # generate did not cut it
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny-ens", prompt=text, max_tokens=room + 1)
    assert err.value.status_code == 400 and err.value.code == "context_length_exceeded"


def test_stop_and_seed(client, server):
    _, service = server
    full = client.completions.create(model="tiny-ens", prompt="great soup", max_tokens=8).choices[0].text
    assert len(full) > 4
    stop = full[len(full) // 2:len(full) // 2 + 2]
    cut = client.completions.create(model="tiny-ens", prompt="great soup", max_tokens=8, stop=stop)
    assert stop not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"
    assert full.startswith(cut.choices[0].text)
    assert cut.choices[0].text == _direct(service, ["great soup"], max_new_tokens=8, stop=[stop])[0].answer

    sampled = [client.completions.create(model="tiny-ens", prompt="great soup", max_tokens=8, temperature=1.0,
                                         seed=7).choices[0].text for _ in range(2)]
    ref = _direct(service, ["great soup"], max_new_tokens=8, temperature=1.0, seed=7)[0].answer
    assert sampled == [ref, ref]


def test_streaming_sends_the_answer_then_usage_and_see(client, server):
    url, _ = server
    whole = client.chat.completions.create(model="tiny-ens", max_tokens=6,
                                           messages=[{"role": "user", "content": "great soup"}])
    chunks = list(client.chat.completions.create(model="tiny-ens", max_tokens=6, stream=True,
                                                 messages=[{"role": "user", "content": "great soup"}]))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.usage.total_tokens == whole.usage.total_tokens and last.see == whole.see
    assert all(c.choices[0].finish_reason is None and not hasattr(c, "see") for c in chunks[:-1])

    text = [c.choices[0].text for c in client.completions.create(model="tiny-ens", prompt="great soup",
                                                                    max_tokens=6, stream=True)]
    assert "".join(text) == client.completions.create(model="tiny-ens", prompt="great soup",
                                                      max_tokens=6).choices[0].text
    raw = httpx.post(url + "/v1/completions", json={"model": "tiny-ens", "prompt": "x", "max_tokens": 2,
                                                   "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.splitlines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_concurrent_clients_are_micro_batched_by_params(server, slow_generate):
    url, service = server
    prompts = [" ".join(["soup"] * (k + 1)) for k in range(8)]  # distinct lengths tell the answers apart
    limits = [2 if k % 2 else 3 for k in range(8)]

    seeded = {"prompt": "great soup", "max_tokens": 8, "temperature": 1.0, "seed": 7}
    barrier = threading.Barrier(12)

    def ask(k):
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        barrier.wait()
        if k >= len(prompts):
            return client.completions.create(model="tiny-ens", **seeded)
        return client.completions.create(model="tiny-ens", prompt=prompts[k], max_tokens=limits[k])

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(ask, range(12)))
    for k, r in enumerate(results[:8]):
        assert r.usage.prompt_tokens == service.loaded.prompt_tokens(None, prompts[k])
        assert r.usage.completion_tokens - (r.see["expert"] is not None) <= limits[k]
    assert sum(size for size, _ in slow_generate) == 12
    assert len(slow_generate) < 12 and max(size for size, _ in slow_generate) > 1
    assert {tokens for _, tokens in slow_generate} == {2, 3, 8}
    # a seed reproduces its answer even when identical requests arrive together
    alone = _direct(service, ["great soup"], max_new_tokens=8, temperature=1.0, seed=7)[0].answer
    assert [r.choices[0].text for r in results[8:]] == [alone] * 4


def _post(url, body, path="/v1/completions"):
    if isinstance(body, (bytes, str)):
        return httpx.post(url + path, content=body, headers={"content-type": "application/json"})
    return httpx.post(url + path, json=body)


OK = {"model": "tiny-ens", "prompt": "great soup", "max_tokens": 2}
CHAT = {"model": "tiny-ens", "messages": [{"role": "user", "content": "great soup"}], "max_tokens": 2}
ERRORS = [
    ("malformed JSON", b'{"model": "tiny-ens", "prompt": ', "/v1/completions", 400, None, "invalid_json"),
    ("body not an object", b"[1, 2]", "/v1/completions", 422, None, None),
    ("missing model", {"prompt": "x"}, "/v1/completions", 422, "model", "missing"),
    ("max_tokens as a string", {**OK, "max_tokens": "5"}, "/v1/completions", 422, "max_tokens", "int_type"),
    ("temperature as a word", {**OK, "temperature": "hot"}, "/v1/completions", 422, "temperature", None),
    ("stop as a number", {**OK, "stop": 5}, "/v1/completions", 422, "stop", None),
    ("prompt as token ids", {**OK, "prompt": [1, 2, 3]}, "/v1/completions", 422, "prompt", None),
    ("messages not a list", {**CHAT, "messages": "hi"}, "/v1/chat/completions", 422, "messages", None),
    ("unknown role", {**CHAT, "messages": [{"role": "bot", "content": "x"}]}, "/v1/chat/completions", 422,
     "messages.0.role", None),
    ("unknown model", {**OK, "model": "gpt-4"}, "/v1/completions", 404, "model", "model_not_found"),
    ("max_tokens 0", {**OK, "max_tokens": 0}, "/v1/completions", 400, "max_tokens", "invalid_value"),
    ("max_tokens huge", {**OK, "max_tokens": 10 ** 6}, "/v1/completions", 400, "max_tokens", "invalid_value"),
    ("max_completion_tokens -1", {**CHAT, "max_completion_tokens": -1}, "/v1/chat/completions", 400,
     "max_completion_tokens", "invalid_value"),
    ("prompt too long", {**OK, "prompt": "soup " * 400}, "/v1/completions", 400, "prompt",
     "context_length_exceeded"),
    ("chat too long", {**CHAT, "messages": [{"role": "user", "content": "soup " * 400}]}, "/v1/chat/completions",
     400, "messages", "context_length_exceeded"),
    ("n = 2", {**OK, "n": 2}, "/v1/completions", 400, "n", "invalid_value"),
    ("temperature 3", {**OK, "temperature": 3}, "/v1/completions", 400, "temperature", "invalid_value"),
    ("top_p 1.5", {**OK, "top_p": 1.5}, "/v1/completions", 400, "top_p", "invalid_value"),
    ("five stop strings", {**OK, "stop": list("abcde")}, "/v1/completions", 400, "stop", "invalid_value"),
    ("seed over 64 bits", {**OK, "seed": 2 ** 70}, "/v1/completions", 400, "seed", "invalid_value"),
    ("two prompts", {**OK, "prompt": ["a", "b"]}, "/v1/completions", 400, "prompt", "invalid_value"),
    ("no user message", {**CHAT, "messages": [{"role": "system", "content": "x"}]}, "/v1/chat/completions",
     400, "messages", "invalid_value"),
    ("unknown path", {**OK}, "/v1/embeddings", 404, None, None),
]


def test_bad_requests_get_openai_errors_and_change_nothing(server, ensemble):
    url, _ = server
    before = tree_hash(ensemble)
    for label, body, path, status, param, code in ERRORS:
        r = _post(url, body, path)
        assert r.status_code == status, (label, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], label
        assert error["type"] == "invalid_request_error" and error["param"] == param, (label, error)
        if code:
            assert error["code"] == code, (label, error)
    assert httpx.get(url + "/v1/completions").status_code == 405
    # the official client maps them to its exceptions
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="tiny-ens", n=3, messages=[{"role": "user", "content": "x"}])
    # top_p 0 keeps only the likeliest token: greedy, not an error
    greedy = _post(url, {**OK, "max_tokens": 4}).json()["choices"][0]["text"]
    assert _post(url, {**OK, "max_tokens": 4, "temperature": 1.0, "top_p": 0}).json()["choices"][0]["text"] == greedy
    assert _post(url, OK).status_code == 200
    assert tree_hash(ensemble) == before


@pytest.mark.parametrize("slow_generate", [1.5], indirect=True)
def test_overload_answers_503_with_retry_after(ensemble, slow_generate):
    with running(ensemble, queue_size=1, max_batch=1) as (url, service):
        barrier = threading.Barrier(5)

        def ask(_):
            barrier.wait()
            return _post(url, OK)

        with ThreadPoolExecutor(5) as pool:
            replies = list(pool.map(ask, range(5)))
        statuses = sorted(r.status_code for r in replies)
        assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
        for r in replies:
            if r.status_code == 503:
                assert int(r.headers["Retry-After"]) >= 1
                assert r.json()["error"]["code"] == "overloaded"
        assert _post(url, OK).status_code == 200
        assert httpx.get(url + "/health").json()["queued"] == 0


def test_live_reload_picks_up_a_new_expert_without_a_half_loaded_state(tiny_llama, tmp_path, caplog):
    # threshold 0: the newest expert accepts every query, so who answers shows which ensemble served
    path = _build(tmp_path, tiny_llama, overrides=["routing.threshold=0.0"])
    old = hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()[:16]
    with running(path, reload_interval_s=0.1) as (url, service):
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        seen: list[tuple[str, str | None, tuple[str, ...]]] = []
        failures: list[Exception] = []
        done = threading.Event()

        def keep_asking():
            while not done.is_set():
                try:
                    r = client.completions.create(model="tiny-ens", prompt="great soup", max_tokens=2)
                except openai.OpenAIError as exc:
                    failures.append(exc)
                    continue
                seen.append((r.system_fingerprint, r.see["expert"], tuple(sorted(r.see["scores"]))))

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            _add(path, "topic", tmp_path)
            new = hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()[:16]
            deadline = time.time() + 60
            while [m["name"] for m in client.models.list().data[0].see_experts] != ["sentiment", "topic"]:
                assert time.time() < deadline, "the new expert never appeared"
                time.sleep(0.1)
            while not seen or seen[-1][0] != new:
                assert time.time() < deadline and asker.is_alive(), "no answer from the new ensemble"
                time.sleep(0.05)
        finally:
            done.set()
            asker.join(30)
        assert not failures
        # every answer came from one whole ensemble: the old one or the new one
        assert set(seen) <= {(old, "sentiment", ("sentiment",)), (new, "topic", ("topic",))}, set(seen)
        # the old ensemble answered until the swap, the new one ever after
        fingerprints = [fp for fp, _, _ in seen]
        assert fingerprints[0] == old and fingerprints == sorted(fingerprints, key=lambda fp: fp == new)
        r = client.chat.completions.create(model="tiny-ens", max_tokens=3,
                                           messages=[{"role": "user", "content": "a headline"}])
        assert r.see["expert"] == "topic" and r.system_fingerprint == new
        assert httpx.get(url + "/health").json()["experts"] == 2
        stored = json.loads((path / "manifest.json").read_text())["experts"]
        assert client.models.list().data[0].see_experts == [{"name": e["name"], "threshold": e["threshold"]}
                                                            for e in stored]

        # a manifest that cannot load is logged, and the loaded ensemble keeps serving
        good = (path / "manifest.json").read_bytes()
        tmp = path / ".manifest.json.broken"
        tmp.write_text("{not json")
        os.replace(tmp, path / "manifest.json")
        deadline = time.time() + 30
        while "reloading" not in caplog.text:
            assert time.time() < deadline, "the failed reload was not logged"
            time.sleep(0.1)
        r = client.completions.create(model="tiny-ens", prompt="great soup", max_tokens=2)
        assert r.see["expert"] == "topic" and r.system_fingerprint == new
        assert len(client.models.list().data[0].see_experts) == 2
        (path / "manifest.json").write_bytes(good)


def test_create_app_refuses_bad_folders_and_options(tmp_path, ensemble):
    with pytest.raises(StoreError, match="not an ensemble"):
        create_app(tmp_path)
    with pytest.raises(ConfigError, match="max_batch"):
        create_app(ensemble, max_batch=0)
    with pytest.raises(ConfigError, match="queue_size"):
        create_app(ensemble, queue_size=0)


def test_http_load_check_runs_against_a_server_process(ensemble, tmp_path):
    from see.bench.http_load import run_load

    results = run_load(ensemble, tmp_path, clients=2, seconds=1, max_tokens=2, log=lambda m: None)
    assert results["answered"] > 0 and results["errors"] == 0
    assert results["latency_p50_s"] <= results["latency_p99_s"] and results["server_peak_rss_bytes"] > 2 ** 20
    assert results["answers_by_family_and_expert"].keys() == {"sentiment"}
    assert "| latency p99 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "results.json").is_file()
