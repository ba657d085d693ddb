"""Running one `POST /v1/generate` request: its prompts through its causal-LM adapter's own model.

A request runs alone in the model thread, between micro-batches (`MicroBatcher.exclusive`),
its prompts `max_rows` to a `generate` call: exactly what `generate_texts` does with the
adapter loaded by itself, so greedy answers match it. Requests are not batched together:
they may ask for different decoding options, and each would wait for the longest answer.
"""

from dataclasses import dataclass

from slimtune.serve.registry import ServedAdapter, UnknownAdapter
from slimtune.tasks.generation import GenerationOptions, generate_answer_ids


@dataclass
class GenerateJob:
    adapter: ServedAdapter
    prompts: list[list[int]]  # token ids of each prompt rendered with the chat template (`chat_prompt_ids`)
    options: GenerationOptions


class Generator:
    def __init__(self, max_rows: int, on_tokens=None):
        self.max_rows = max_rows
        self.on_tokens = on_tokens  # called with (prompts, new tokens) after every request, e.g. for metrics

    def run(self, job: GenerateJob) -> list[str]:
        """The answer to each prompt, in order."""
        if job.adapter.removed:
            raise UnknownAdapter(f"adapter {job.adapter.name!r} was unloaded before the request ran")
        answers = generate_answer_ids(job.adapter.model, job.prompts, job.options, self.max_rows)
        if self.on_tokens is not None:
            self.on_tokens(len(answers), sum(map(len, answers)))
        return [job.adapter.tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]
