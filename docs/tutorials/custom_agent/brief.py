"""A custom agent: answers a question in at most `words` words, and a rule that checks it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from peerflow.agents import Agent, AgentOptions, to_step
from peerflow.message import Message, Step


class BriefOptions(AgentOptions):
    """The role's own YAML keys. Unknown keys are errors, reported before the run."""

    service: str = Field(description="The LLM service to call.")
    words: int = Field(default=30, ge=1, description="Longest answer, in words.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature.")


class BriefAnswerer(Agent):
    """Asks the service for a short answer and cuts it to `words` words."""

    Options = BriefOptions
    options: BriefOptions

    def __init__(self, role: str, options: BriefOptions, services: dict[str, Any]):
        super().__init__(role, options, services)
        if options.service not in services:
            raise ValueError(f"roles.{role}.service: no service named {options.service!r}")
        self.service = services[options.service]

    async def preprocess(self, message: Message) -> dict[str, Any]:
        """The chat request: built from the message alone (agents keep no task state)."""
        return {
            "messages": [
                {"role": "system", "content": f"Answer in at most {self.options.words} words."},
                {"role": "user", "content": message.vars["question"]},
            ],
            "temperature": self.options.temperature,
            "max_tokens": 2 * self.options.words,
            "seed": message.seed,
        }

    async def process(self, message: Message, request: dict[str, Any]) -> Any:
        return await self.service.call(request, key=message.id)

    async def postprocess(self, message: Message, result: Any) -> Step:
        step = to_step(self.role, result)  # keeps the reply's tokens, model and timings
        words = (step.content or "").split()
        limit = self.options.words
        step.content = " ".join(words[:limit])
        step.data = {"words": min(len(words), limit), "cut": len(words) > limit}
        return step


def check_length(message: Message, limit: int) -> dict[str, Any]:
    """A function agent: reads the answerer's data, returns this step's data."""
    answer = message.last("answerer")
    return {"within_limit": answer.data["words"] <= limit}


def metrics(message: Message) -> dict[str, float]:
    answer = message.last("answerer")
    return {"words": answer.data["words"] if answer and answer.data else 0}
