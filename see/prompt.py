"""The prompt: how a query becomes the token ids that the trainer, every expert and the fallback see.

One template, fixed at ``see init``, serves training, routing and evaluation.
:class:`PromptFormat` owns everything about it: the accepted query forms
(string, ``{"instruction", "input"}`` dict, chat messages), the text, the
encoding (the template's tail tokenized on its own, so an aLoRA invocation
sequence appears verbatim), truncation to the model's context, and the
indicator tokens that answers must never contain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from see.errors import ConfigError, DataError
from see.modeling import stop_token_id

#: A query: a string, an {"instruction", "input"} dict, chat messages, or an (instruction, input) pair.
Query = Any


def format_prompt(input: str, instruction: str | None, template: str) -> str:
    """The template filled in; its line holding ``{instruction}`` is dropped when there is none,
    so a bare query reads naturally."""
    if not instruction:
        template = "\n".join(line for line in template.split("\n") if "{instruction}" not in line)
    return template.replace("{instruction}", instruction or "").replace("{input}", input)


def template_tail(template: str) -> str:
    """The template's text after {input} (e.g. "\\nAnswer:"): where aLoRA experts switch on."""
    return template.split("{input}")[-1]


def query_parts(query: Query) -> tuple[str | None, str]:
    """(instruction, input) of any accepted query form, checked to be encodable text."""
    instruction, text = _query_parts(query)
    for part, name in ((instruction, "instruction"), (text, "query")):
        if part is None:
            continue
        if not isinstance(part, str):
            raise DataError(f"the {name} must be a string, got {type(part).__name__}", field=name)
        try:
            part.encode("utf-8")
        except UnicodeEncodeError as exc:
            # a byte that is not UTF-8, passed on a command line, arrives as a lone surrogate
            raise DataError(f"the {name} is not valid UTF-8 text (character {exc.start + 1}: "
                            f"{part[exc.start]!r})", field=name,
                            hint="pass the text in UTF-8, or put queries in a UTF-8 file") from None
    return instruction, text


def _query_parts(query: Query) -> tuple[str | None, str]:
    if isinstance(query, str):
        return None, query
    if isinstance(query, tuple) and len(query) == 2 and isinstance(query[1], str):
        return query[0], query[1]
    if isinstance(query, dict) and "input" in query:
        return query.get("instruction"), query["input"]
    if isinstance(query, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in query):
        system = [m["content"] for m in query if m.get("role") == "system"]
        users = [m["content"] for m in query if m.get("role", "user") == "user"]
        if not users:
            raise DataError("chat messages have no user message", field="messages")
        return "\n".join(system) or None, users[-1]
    raise DataError(f"a query must be a string, an {{'instruction', 'input'}} dict or chat messages; "
                    f"got {type(query).__name__}", field="queries")


@dataclass(frozen=True)
class Indicator:
    """The two tokens an expert's first generated token is one of."""

    pos: str
    neg: str
    pos_id: int
    neg_id: int

    @property
    def ids(self) -> tuple[int, int]:
        """Token ids an answer must never contain."""
        return self.pos_id, self.neg_id


#: Text is tokenized as text: a query (or answer) holding the literal "<<pos>>", or any other special token's
#: spelling, must never produce that token's id, or a user could force an expert's decision.
PLAIN = {"split_special_tokens": True}


class PromptFormat:
    """The template, the tokenizer and the context limit of one model.

    ``template=None`` is a plain prompt (a separate fallback model gets the
    ensemble's prompt text but tokenizes it as it likes).
    """

    def __init__(self, tokenizer, template: str | None, context: int):
        self.tokenizer = tokenizer
        self.template = template
        self.context = context
        self.tail = template_tail(template) if template else ""
        self.stop_id = stop_token_id(tokenizer)

    def text(self, query: Query) -> str:
        instruction, input = query_parts(query)
        return format_prompt(input, instruction, self.template or "{instruction}\n{input}")

    def limit(self, max_new_tokens: int) -> int:
        """Longest prompt that leaves room in the context for the indicator and the answer."""
        return max(8, self.context - max_new_tokens - 1)

    def encode(self, text: str, max_new_tokens: int | None = None) -> list[int]:
        """Token ids of a prompt text, cut to fit ``max_new_tokens`` more tokens in the context."""
        tok = self.tokenizer
        if self.tail and text.endswith(self.tail):
            head = self._without_closing_special(tok(text[: len(text) - len(self.tail)], **PLAIN)["input_ids"])
            ids = head + tok(self.tail, add_special_tokens=False, **PLAIN)["input_ids"]
        else:
            ids = self._without_closing_special(tok(text, **PLAIN)["input_ids"])
        return self.truncate(ids, self.limit(max_new_tokens)) if max_new_tokens is not None else ids

    def encode_all(self, texts: Sequence[str], max_new_tokens: int | None = None) -> list[list[int]]:
        return [self.encode(t, max_new_tokens) for t in texts]

    def answer_ids(self, answer: str) -> list[int]:
        """An answer's ids as a target: a space-led continuation of the prompt."""
        return self.tokenizer(" " + answer, add_special_tokens=False, **PLAIN)["input_ids"]

    def truncate(self, ids: list[int], limit: int) -> list[int]:
        """Cut a too-long prompt from the start, keeping a leading BOS/CLS and the end (where the question is)."""
        if len(ids) <= limit:
            return ids
        tok = self.tokenizer
        starts = {t for t in (tok.bos_token_id, getattr(tok, "cls_token_id", None)) if t is not None}
        head = ids[:1] if ids and ids[0] in starts else []
        return head + ids[len(ids) - (limit - len(head)):]

    def invocation_ids(self) -> list[int]:
        """aLoRA invocation sequence: the template's tail, tokenized as :meth:`encode` does."""
        if not self.tail.strip():
            raise ConfigError("alora experts need text after {input} in the template to activate on",
                              field="prompt.template")
        return self.tokenizer(self.tail, add_special_tokens=False, **PLAIN)["input_ids"]

    def _without_closing_special(self, ids: list[int]) -> list[int]:
        """Drop an end-of-text token the tokenizer appends (BERT's [SEP]): the answer follows the prompt."""
        tok = self.tokenizer
        closing = {t for t in (tok.eos_token_id, getattr(tok, "sep_token_id", None)) if t is not None}
        if len(ids) > 1 and ids[-1] in closing:
            return ids[:-1]
        return ids
