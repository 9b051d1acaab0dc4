"""An OpenAI-compatible HTTP server over an ensemble: ``see serve DIR``.

    see serve runs/my-ensemble --port 8000

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="my-ensemble", messages=[
        {"role": "system", "content": "Is the review positive or negative?"},
        {"role": "user", "content": "great soup"}])

Endpoints
    ``POST /v1/completions`` and ``POST /v1/chat/completions``. ``model`` names
    the ensemble: the name of its folder (``see serve runs/my-ensemble`` serves
    ``my-ensemble``). Supported fields: ``max_tokens`` (chat also takes
    ``max_completion_tokens``; when omitted, the ensemble's
    ``routing.max_new_tokens``, cut to what the context leaves), ``temperature`` (default 0, greedy, as
    ``Ensemble.generate``; not OpenAI's 1), ``top_p``, ``stop`` (a string or a
    list of up to 4), ``seed``, ``n`` (1 only) and ``stream``. Other OpenAI
    fields are accepted and ignored. A completion's ``prompt`` is one string,
    the query's input with no instruction. In a chat, system (and developer)
    messages become the instruction and the last user message the input, as
    ``Ensemble.generate`` reads chat messages; earlier turns are not seen,
    because experts answer single-turn tasks.

    Every answer carries OpenAI's fields, ``usage``, ``system_fingerprint``
    (the first 16 hex digits of the SHA-256 of the manifest that answered) and a
    ``see`` object: ``{"expert": name, or null when the fallback answered,
    "scores": {expert: P(<<pos>>)}}`` for the experts consulted.

    ``GET /v1/models`` (and ``/v1/models/{model}``) lists the ensemble in
    OpenAI's format, with an extra field ``see_experts``: ``[{"name",
    "threshold"}]``, oldest first. ``threshold`` is the acceptance threshold on
    P(<<pos>>) stored for the expert (when it was added, or by ``see
    calibrate``); null when none is stored, and the ensemble's
    ``routing.threshold`` rule applies.
    ``GET /health`` answers 200 with the expert count, the queue's length and
    how many generate calls answered how many requests.

Streaming
    ``Ensemble.generate`` returns whole answers, so ``stream: true`` sends the
    answer only once it is complete: one chunk holding the whole text, then a
    chunk with ``finish_reason``, ``usage`` and ``see``, then ``data: [DONE]``.
    It does not shorten the time to the first token; it serves clients that
    only speak streaming.

Batching and overload
    Requests wait in a bounded queue. One worker takes the first, collects more
    for up to ``batch_wait_ms`` (at most ``max_batch``), and answers each group
    of equal sampling parameters with one ``Ensemble.generate`` call in a
    worker thread. A seeded sampled request (``seed`` with ``temperature`` > 0)
    runs alone, so its seed gives the same answer whatever else arrives. When
    ``queue_size`` requests are waiting, the next gets 503 with ``Retry-After``
    (seconds, estimated from recent batch times) rather than more memory.

Errors
    OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``. 400:
    malformed JSON, a value out of range, ``n`` other than 1, a chat without a
    user message, or a prompt that does not fit the base's context together with
    ``max_tokens`` (code ``context_length_exceeded``; ``generate`` would
    silently cut it). 404: an unknown model or path; 405: a wrong method. 422: a missing field or a
    wrong type. 503: the queue is full. 500: a bug, logged with its traceback.
    The server never writes to the ensemble directory.

Live reload
    Between batches, and every ``reload_interval_s`` when idle, the server
    looks at ``manifest.json``. When its bytes change (``see add-expert``,
    ``see calibrate``), a new ``Ensemble`` loads in a background thread while
    the old one keeps answering; the finished one replaces it between batches,
    so every batch runs on one fully loaded ensemble. A failed load is logged,
    and the old ensemble keeps serving until the manifest changes again.

One process serves one ensemble: the model lives in this process, so do not
run uvicorn with several workers.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from see.ensemble import Ensemble, GenerationResult
from see.errors import ConfigError, SeeError, StoreError
from see.prompt import PromptFormat

log = logging.getLogger("see.serve")

#: OpenAI's limit on stop sequences.
MAX_STOP = 4


# ----------------------------------------------------------------------------- errors

class ApiError(Exception):
    """An HTTP error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status, headers=self.headers)


# ----------------------------------------------------------------------------- request bodies

class _Strict(BaseModel):
    # "5" is not a number here, as with OpenAI
    model_config = ConfigDict(strict=True)


class _Body(_Strict):
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None


class CompletionRequest(_Body):
    prompt: str | list[str]


class _TextPart(_Strict):
    type: Literal["text"]
    text: str


class _Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(_Body):
    messages: list[_Message]
    max_completion_tokens: int | None = None


#: Names that may appear in a validation error's location; the others are pydantic's union-member tags.
_FIELDS = frozenset().union(*(m.model_fields for m in (CompletionRequest, ChatRequest, _Message, _TextPart)))


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e["type"] == "json_invalid" for e in errors):
        return ApiError(400, "the request body is not valid JSON", code="invalid_json").response()
    first = errors[0]
    param = ".".join(str(p) for p in first["loc"][1:] if isinstance(p, int) or p in _FIELDS) or None
    # a union field reports one error per member; say them all
    same = [e for e in errors if e["loc"][:2] == first["loc"][:2]]
    reasons = " or ".join(dict.fromkeys(e["msg"] for e in same))
    return ApiError(422, f"{param or 'request body'}: {reasons}", param=param, code=first["type"]).response()


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return ApiError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()


# ----------------------------------------------------------------------------- the loaded ensemble

def _stat_key(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass(frozen=True)
class _Loaded:
    """One manifest version, fully loaded: what a batch runs on and what requests are checked against."""

    ens: Ensemble
    #: SHA-256 of the manifest bytes read before the load, so the ensemble is at least this new.
    fingerprint: str
    #: When that manifest was written (Unix seconds).
    written: int
    default_max_tokens: int
    #: The ensemble's prompt over a copy of its tokenizer: requests are counted in the event loop while
    #: generate uses the ensemble's own.
    prompt: PromptFormat
    context: int

    @classmethod
    def load(cls, root: Path, manifest: Path, engine: str = "torch") -> "_Loaded":
        written = int(os.stat(manifest).st_mtime)
        data = manifest.read_bytes()
        ens = Ensemble.load(root, engine=engine)
        prompt = PromptFormat(copy.deepcopy(ens.tokenizer), ens.manifest.prompt.template, ens.prompt.context)
        return cls(ens=ens, fingerprint=hashlib.sha256(data).hexdigest(), written=written,
                   default_max_tokens=int(ens.manifest.routing.max_new_tokens), prompt=prompt,
                   context=ens.prompt.context)

    def experts(self) -> list[dict]:
        return [{"name": e.name, "threshold": e.threshold} for e in self.ens.manifest.experts]

    def prompt_tokens(self, instruction: str | None, text: str) -> int:
        """Tokens of the prompt ``generate`` builds for this query, uncut."""
        return len(self.prompt.encode(self.prompt.text((instruction, text))))


# ----------------------------------------------------------------------------- sampling

@dataclass(frozen=True)
class Sampling:
    """A request's generation parameters; requests with equal ones share a ``generate`` call."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None


def _sampling(body: _Body, loaded: _Loaded, max_tokens: int | None, max_param: str, prompt_tokens: int,
              prompt_param: str) -> Sampling:
    if body.n not in (None, 1):
        raise ApiError(400, f"n must be 1 (the ensemble gives one answer per query), got {body.n}", param="n",
                       code="invalid_value")
    temperature = 0.0 if body.temperature is None else body.temperature
    if not 0.0 <= temperature <= 2.0:
        raise ApiError(400, f"temperature must be between 0 and 2, got {temperature}", param="temperature",
                       code="invalid_value")
    top_p = 1.0 if body.top_p is None else body.top_p
    if not 0.0 <= top_p <= 1.0:
        raise ApiError(400, f"top_p must be between 0 and 1, got {top_p}", param="top_p", code="invalid_value")
    if top_p == 0.0:
        # a nucleus of mass 0 keeps only the likeliest token, which is greedy decoding; sampling from
        # the empty nucleus itself would fail inside generate
        temperature = 0.0
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > MAX_STOP:
        raise ApiError(400, f"stop takes at most {MAX_STOP} sequences, got {len(stop)}", param="stop",
                       code="invalid_value")
    if body.seed is not None and not -2 ** 63 <= body.seed < 2 ** 63:
        raise ApiError(400, "seed must fit in 64 bits", param="seed", code="invalid_value")
    most = loaded.context - 2  # a 1-token prompt and the routing token
    if max_tokens is not None and not 1 <= max_tokens <= most:
        raise ApiError(400, f"{max_param} must be between 1 and {most}, got {max_tokens}", param=max_param,
                       code="invalid_value")
    # an expert's answer starts with its <<pos>> token, which takes one position too
    room = loaded.context - 1 - prompt_tokens
    wanted = max_tokens if max_tokens is not None else max(1, min(loaded.default_max_tokens, room))
    if wanted > room:
        raise ApiError(400, f"This model's maximum context length is {loaded.context} tokens, but "
                            f"{prompt_tokens + wanted + 1} were requested ({prompt_tokens} in the prompt, {wanted} "
                            f"for the completion and 1 for routing). Shorten the prompt or lower {max_param}.",
                       param=prompt_param, code="context_length_exceeded")
    return Sampling(wanted, temperature, top_p, stop, body.seed)


# ----------------------------------------------------------------------------- batching and reload

@dataclass(eq=False)
class _Job:
    query: Any
    sampling: Sampling
    future: asyncio.Future


def _groups(jobs: list[_Job]) -> list[list[_Job]]:
    groups: dict[Any, list[_Job]] = {}
    for job in jobs:
        s = job.sampling
        # one generator draws a batch's samples, so a seed reproduces an answer only in a batch of one
        alone = s.seed is not None and s.temperature > 0
        groups.setdefault((s, id(job) if alone else None), []).append(job)
    return list(groups.values())


def _generate(ens: Ensemble, jobs: list[_Job]) -> list[GenerationResult | ApiError]:
    s = jobs[0].sampling
    try:
        return ens.generate([j.query for j in jobs], max_new_tokens=s.max_tokens, temperature=s.temperature,
                            top_p=s.top_p, stop=list(s.stop), seed=s.seed)
    except SeeError as exc:
        if len(jobs) == 1:
            return [ApiError(400, exc.reason, param=exc.field, code="invalid_request")]
    # a query generate refuses must not fail the others in its batch
    return [_generate(ens, [job])[0] for job in jobs]


class _Service:
    """The loaded ensemble, the request queue and the worker that batches it."""

    def __init__(self, root: str | Path, max_batch: int, queue_size: int, batch_wait_ms: float,
                 reload_interval_s: float, engine: str = "torch"):
        for key, value, low in (("max_batch", max_batch, 1), ("queue_size", queue_size, 1)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"must be an integer >= {low}, got {value!r}", field=key)
        if batch_wait_ms < 0 or reload_interval_s <= 0:
            raise ConfigError("batch_wait_ms must be >= 0 and reload_interval_s > 0", field="serve")
        self.root = Path(root)
        self.engine = engine
        self.name = self.root.resolve().name
        self.manifest_path = self.root / "manifest.json"
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.batch_wait = batch_wait_ms / 1000
        self.reload_interval = reload_interval_s
        if not self.manifest_path.is_file():
            raise StoreError("not an ensemble: no manifest.json", file=self.root, hint="create one with see init")
        self._seen = _stat_key(self.manifest_path)
        self.loaded = _Loaded.load(self.root, self.manifest_path, self.engine)
        self._reload: tuple[asyncio.Future, str] | None = None
        self._failed: str | None = None
        self._batch_s = 0.0
        self.generate_calls = 0
        self.answered = 0
        self._generator = ThreadPoolExecutor(1, thread_name_prefix="see-generate")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="see-reload")
        self.queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None

    # -- lifecycle (inside the server's event loop)
    def start(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)
        self._worker = asyncio.create_task(self._run(), name="see-batcher")

    async def stop(self) -> None:
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._generator.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    # -- requests
    def check_model(self, model: str) -> _Loaded:
        if model != self.name:
            raise ApiError(404, f"The model '{model}' does not exist; this server serves '{self.name}'",
                           param="model", code="model_not_found")
        return self.loaded

    async def answer(self, query: Any, sampling: Sampling) -> tuple[GenerationResult, str]:
        """The query's result and the fingerprint of the manifest that answered it."""
        job = _Job(query, sampling, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise ApiError(503, f"the server is busy ({self.queue_size} requests waiting); retry later",
                           type="server_error", code="overloaded",
                           headers={"Retry-After": str(self.retry_after())}) from None
        return await job.future

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: batches ahead times recent batch time."""
        return max(1, math.ceil(self._batch_s * (1 + self.queue.qsize() / self.max_batch)))

    # -- the worker
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._poll_manifest()
            try:
                jobs = [await asyncio.wait_for(self.queue.get(), self.reload_interval)]
            except asyncio.TimeoutError:
                continue
            deadline = loop.time() + self.batch_wait
            while len(jobs) < self.max_batch:
                remaining = deadline - loop.time()
                try:
                    jobs.append(self.queue.get_nowait() if remaining <= 0
                                else await asyncio.wait_for(self.queue.get(), remaining))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            loaded = self.loaded
            for group in _groups([j for j in jobs if not j.future.done()]):
                await self._answer(loop, loaded, group)

    async def _answer(self, loop: asyncio.AbstractEventLoop, loaded: _Loaded, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._generator, _generate, loaded.ens, jobs)
        except Exception:
            log.exception("generate failed on a batch of %d request(s)", len(jobs))
            results = [ApiError(500, "internal error while generating; see the server log", type="server_error",
                                code="internal_error")] * len(jobs)
        seconds = time.perf_counter() - started
        self._batch_s = seconds if not self.generate_calls else 0.8 * self._batch_s + 0.2 * seconds
        self.generate_calls += 1
        for job, result in zip(jobs, results):
            if job.future.done():  # the client went away
                continue
            if isinstance(result, ApiError):
                job.future.set_exception(result)
            else:
                job.future.set_result((result, loaded.fingerprint))
                self.answered += 1

    def _poll_manifest(self) -> None:
        """Swap in a finished reload, or start one when the manifest's bytes changed."""
        if self._reload is not None:
            if not self._reload[0].done():
                return
            self._finish_reload()
        try:
            key = _stat_key(self.manifest_path)
            if key == self._seen:
                return
            digest = hashlib.sha256(self.manifest_path.read_bytes()).hexdigest()
        except OSError as exc:
            if self._seen is not None:  # say it once, not every poll
                log.error("cannot read %s (%s); still serving the loaded ensemble", self.manifest_path, exc)
                self._seen = None
            return
        self._seen = key
        if digest in (self.loaded.fingerprint, self._failed):
            return
        log.info("%s changed; loading the new ensemble while the old one serves", self.manifest_path)
        future = asyncio.get_running_loop().run_in_executor(self._loader, _Loaded.load, self.root,
                                                           self.manifest_path, self.engine)
        self._reload = (future, digest)

    def _finish_reload(self) -> None:
        (future, digest), self._reload = self._reload, None
        try:
            new = future.result()
        except Exception as exc:
            self._failed = digest
            log.error("reloading %s failed; still serving its %d expert(s) loaded before: %s", self.root,
                      len(self.loaded.ens.manifest.experts), exc, exc_info=not isinstance(exc, SeeError))
            return
        old, self.loaded, self._failed = self.loaded, new, None
        log.info("reloaded %s: experts %s (was %s)", self.root, [e["name"] for e in new.experts()],
                 [e["name"] for e in old.experts()])


# ----------------------------------------------------------------------------- responses

def _usage(r: GenerationResult) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}


def _see(r: GenerationResult) -> dict:
    return {"expert": r.expert, "scores": r.scores}


def _head(prefix: str, obj: str, model: str, fingerprint: str) -> dict:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()), "model": model,
            "system_fingerprint": fingerprint[:16]}


def _sse(chunks: list[dict]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _completion_response(r: GenerationResult, model: str, fingerprint: str, stream: bool):
    if not stream:
        return {**_head("cmpl", "text_completion", model, fingerprint),
                "choices": [{"index": 0, "text": r.answer, "logprobs": None, "finish_reason": r.finish_reason}],
                "usage": _usage(r), "see": _see(r)}
    head = _head("cmpl", "text_completion", model, fingerprint)
    return _sse([{**head, "choices": [{"index": 0, "text": r.answer, "logprobs": None, "finish_reason": None}]},
                 {**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": r.finish_reason}],
                  "usage": _usage(r), "see": _see(r)}])


def _chat_response(r: GenerationResult, model: str, fingerprint: str, stream: bool):
    if not stream:
        return {**_head("chatcmpl", "chat.completion", model, fingerprint),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.answer}, "logprobs": None,
                             "finish_reason": r.finish_reason}],
                "usage": _usage(r), "see": _see(r)}
    head = _head("chatcmpl", "chat.completion.chunk", model, fingerprint)
    return _sse([{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": r.answer},
                                       "logprobs": None, "finish_reason": None}]},
                 {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                       "finish_reason": r.finish_reason}],
                  "usage": _usage(r), "see": _see(r)}])


# ----------------------------------------------------------------------------- the app

def create_app(dir: str | Path, *, max_batch: int = 32, queue_size: int = 256, batch_wait_ms: float = 5.0,
               reload_interval_s: float = 1.0, engine: str = "torch") -> FastAPI:
    """The FastAPI app serving the ensemble at ``dir``; loads it now, so a bad ensemble fails here.

    ``app.state.service`` holds the loaded ensemble and the queue.
    """
    service = _Service(dir, max_batch, queue_size, batch_wait_ms, reload_interval_s, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=f"see: {service.name}", lifespan=lifespan)
    app.state.service = service
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    def model_card(loaded: _Loaded) -> dict:
        return {"id": service.name, "object": "model", "created": loaded.written, "owned_by": "see",
                "see_experts": loaded.experts()}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": service.name, "experts": len(service.loaded.ens.manifest.experts),
                "queued": service.queue.qsize(), "generate_calls": service.generate_calls,
                "answered": service.answered}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card(service.loaded)]}

    @app.get("/v1/models/{model}")
    async def model(model: str) -> dict:
        return model_card(service.check_model(model))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        loaded = service.check_model(body.model)
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, f"send one prompt per request, got {len(prompt)}", param="prompt",
                               code="invalid_value")
            prompt = prompt[0]
        sampling = _sampling(body, loaded, body.max_tokens, "max_tokens", loaded.prompt_tokens(None, prompt),
                             "prompt")
        result, fingerprint = await service.answer(prompt, sampling)
        return _completion_response(result, service.name, fingerprint, bool(body.stream))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        loaded = service.check_model(body.model)
        users = [m.text() for m in body.messages if m.role == "user"]
        if not users:
            raise ApiError(400, "messages hold no user message", param="messages", code="invalid_value")
        instruction = "\n".join(m.text() for m in body.messages if m.role in ("system", "developer")) or None
        max_param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        sampling = _sampling(body, loaded, body.max_completion_tokens if body.max_completion_tokens is not None
                             else body.max_tokens, max_param, loaded.prompt_tokens(instruction, users[-1]),
                             "messages")
        result, fingerprint = await service.answer({"instruction": instruction, "input": users[-1]}, sampling)
        return _chat_response(result, service.name, fingerprint, bool(body.stream))

    return app


def serve(dir: str | Path, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32, queue_size: int = 256,
          batch_wait_ms: float = 5.0, reload_interval_s: float = 1.0, log_level: str = "info",
          engine: str = "torch") -> None:
    """Serve the ensemble at ``dir`` until interrupted (Ctrl-C finishes the requests in flight)."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(dir, max_batch=max_batch, queue_size=queue_size, batch_wait_ms=batch_wait_ms,
                     reload_interval_s=reload_interval_s, engine=engine)
    service = app.state.service
    log.info("serving %s as model '%s' (%d experts) on http://%s:%d/v1", dir, service.name,
             len(service.loaded.ens.manifest.experts), host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
