"""What the reader returns, whichever engine answered (torch or vLLM)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationResult:
    """One query's answer and how it was routed."""

    query: str
    answer: str
    #: The expert that answered, or None when the fallback answered.
    expert: str | None
    #: P(<<pos>>) of each consulted expert.
    scores: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"

    def to_json(self) -> dict:
        return {"query": self.query, "answer": self.answer, "expert": self.expert,
                "scores": {k: round(v, 6) for k, v in self.scores.items()},
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "finish_reason": self.finish_reason}


@dataclass
class RouteDecision:
    query: str
    expert: str | None
    scores: dict[str, float] = field(default_factory=dict)
