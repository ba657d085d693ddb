"""Causal-LM instruction tuning: learn the assistant's replies in JSONL conversations.

The loss covers only the response tokens (data/instructions.py). Examples longer
than the token limit are dropped, never cut: a cut answer would teach the model to
stop mid-sentence, and a cut prompt to answer a question it did not see. How many,
and the first few file:line, go to stderr; every example too long is an error.

Scores: loss and perplexity over the response tokens, next-token accuracy on them
(the metric that picks the best weights; higher is better, no generation needed)
and, when every reference answer is a short label (at most SHORT_ANSWER_TOKENS
tokens on one line), exact match of the greedily generated answer.
"""

import math
import sys

import torch
import torch.nn.functional as F

from slimtune.data.batching import LABEL_PAD
from slimtune.data.instructions import encode_conversation, read_conversations
from slimtune.errors import SlimtuneError
from slimtune.models.inference import run_batches
from slimtune.models.loading import load_backbone
from slimtune.models.task_models import CausalLM
from slimtune.tasks.base import GENERATION, Task, refuse_options
from slimtune.tasks.generation import GenerationOptions, generate_ids, generate_texts

SHORT_ANSWER_TOKENS = 8
SHOWN_LOCATIONS = 3


def normalise_answer(text: str) -> str:
    """Lowercased first line without surrounding spaces or end punctuation: 'Positive.\\n…' → 'positive'."""
    lines = text.strip().splitlines()
    return lines[0].strip().rstrip(".!?").strip().lower() if lines else ""


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] labels → [N] the labelled tokens each predicted position must produce (CausalLM's row order)."""
    following = labels[:, 1:]
    return following[following != LABEL_PAD]


class CausalLMTask(Task):
    name = "causal-lm"
    primary_metric = "token_accuracy"
    kind = GENERATION

    def read(self, path, **options):
        refuse_options(self.name, options)
        return read_conversations(path)

    def label_names(self, rows):
        return []

    def load_backbone(self, spec, pooling=None, max_length=None):
        if pooling is not None:
            raise SlimtuneError("--pooling does not apply to task causal-lm")
        return load_backbone(spec, max_length=max_length, causal=True)

    def encode(self, rows, tokenizer, labels, max_length):
        features, too_long = [], []
        for row in rows:
            feature = encode_conversation(tokenizer, row)
            if len(feature["input_ids"]) > max_length:
                too_long.append(f"{row.where} ({len(feature['input_ids'])} tokens)")
            else:
                features.append(feature)
        if too_long:
            shown = ", ".join(too_long[:SHOWN_LOCATIONS]) + (", …" if len(too_long) > SHOWN_LOCATIONS else "")
            if not features:
                raise SlimtuneError(f"all {len(rows)} examples are longer than {max_length} tokens: {shown}; "
                                    "raise --max-length")
            print(f"warning: dropped {len(too_long)} of {len(rows)} examples longer than {max_length} tokens "
                  f"(raise --max-length to keep them): {shown}", file=sys.stderr)
        return features

    def build_model(self, backbone, labels):
        return CausalLM(backbone.model, backbone.tokenizer)

    def loss(self, logits, labels):
        return F.cross_entropy(logits, shift_targets(labels))

    def outputs(self, model, features, pad_id, batch_size):
        """Per feature: summed loss, correct next tokens and their count over its response tokens, and the greedy
        answer when every reference in `features` is a short label (else None)."""
        out = [None] * len(features)
        for indices, batch, logits in run_batches(model, features, pad_id, batch_size):  # logits [N, V]
            targets = shift_targets(batch["labels"])
            losses = F.cross_entropy(logits, targets, reduction="none")
            hits = logits.argmax(-1) == targets
            counts = (batch["labels"][:, 1:] != LABEL_PAD).sum(1).tolist()  # rows' shares of N, in row order
            for i, row_losses, row_hits in zip(indices, losses.split(counts), hits.split(counts)):
                out[i] = {"loss_sum": row_losses.sum().item(), "correct": int(row_hits.sum()),
                          "count": len(row_hits), "answer": None}
        answer_lengths = [len(model.tokenizer(f["answer"], add_special_tokens=False)["input_ids"]) for f in features]
        if features and all(n <= SHORT_ANSWER_TOKENS and "\n" not in f["answer"].strip()
                            for n, f in zip(answer_lengths, features)):
            for i, answer in self._greedy_answers(model, features, batch_size, max(answer_lengths)):
                out[i]["answer"] = answer
        return out

    def score(self, outputs, features, labels):
        count = sum(o["count"] for o in outputs)
        loss = sum(o["loss_sum"] for o in outputs) / max(count, 1)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                   "token_accuracy": sum(o["correct"] for o in outputs) / max(count, 1),
                   "response_tokens": count, "examples": len(features)}
        if outputs and all(o["answer"] is not None for o in outputs):
            metrics["exact_match"] = sum(normalise_answer(o["answer"]) == normalise_answer(f["answer"])
                                         for o, f in zip(outputs, features)) / len(features)
        return metrics

    def _greedy_answers(self, model, features, batch_size: int, longest_answer: int):
        """(index, greedy answer) per feature, with room for a few tokens more than the longest reference."""
        options = GenerationOptions(max_new_tokens=longest_answer + 4)
        order = sorted(range(len(features)), key=lambda i: len(features[i]["prompt_ids"]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, ids in zip(chunk, generate_ids(model, [features[i]["prompt_ids"] for i in chunk], options)):
                yield i, model.tokenizer.decode(ids, skip_special_tokens=True)

    def predict(self, loaded, texts, batch_size, **options):
        """Greedy answers to user prompts (`slimtune generate` has the sampling and streaming options)."""
        refuse_options(self.name, options)
        return [{"response": text} for text in generate_texts(loaded.model, texts, batch_size=batch_size)]
