"""Per-token Integrated Gradients (Sundararajan et al., 2017) of a loaded adapter's predictions, by captum.

For a target score F (a label's logit, or the summed logits of an entity's predicted tags) IG attributes
F(x) − F(x') to the input tokens, x' being the same text with every word piece replaced by the padding token
(special tokens kept). The path runs through the input-embedding layer (captum's LayerIntegratedGradients), and
each token's attribution is the sum over its embedding dimensions. Completeness — the attributions sum to
F(x) − F(x') — holds up to the integral's error, which captum reports as the convergence delta.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from slimtune.data import tag_schemes
from slimtune.errors import SlimtuneError
from slimtune.tasks.base import CLASSIFICATION, MULTI_LABEL, TAGGING

# Rows × tokens of one pass along the path: bounds the activations kept for the backward pass (one 512-token text at
# 200 steps in a single pass would hold gigabytes); short texts still run all their steps in one pass.
TOKENS_PER_PASS = 4096

# A target: its name, and the score it explains from the model's logits ([B, C] or [B, T, C]) → [B].
Target = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class Explanation:
    target: str  # the label, or the entity ("PER: anna")
    tokens: list[str]  # the tokenizer's pieces, special tokens included
    attributions: list[float]  # per token; they sum to score − baseline_score, up to `delta`
    score: float  # F(x)
    baseline_score: float  # F(x')
    delta: float  # captum's convergence delta: sum(attributions) − (score − baseline_score)

    def as_dict(self) -> dict:
        return asdict(self)


def _label_target(name: str, index: int) -> Target:
    return name, lambda logits: logits[:, index]


def _entity_target(name: str, positions: list[int], tag_ids: list[int]) -> Target:
    return name, lambda logits: sum(logits[:, p, t] for p, t in zip(positions, tag_ids))


def targets_for(task, feature: dict, prediction: dict, labels: list[str]) -> list[Target]:
    """What to explain in one prediction: the predicted label (classify), each predicted label or, with none,
    the likeliest (multilabel), each entity (ner)."""
    if task.kind == CLASSIFICATION:
        return [_label_target(prediction["label"], labels.index(prediction["label"]))]
    if task.kind == MULTI_LABEL:
        chosen = prediction["labels"] or [max(prediction["scores"], key=prediction["scores"].get)]
        return [_label_target(name, labels.index(name)) for name in chosen]
    if task.kind == TAGGING:
        tags = prediction["tags"]  # IOB2: predicted with scheme INTERNAL_SCHEME (see `explain`)
        position = dict(feature["owned"])  # word → its first sub-token's position
        out = []
        for span, entity in zip(tag_schemes.to_spans(tags, tag_schemes.INTERNAL_SCHEME), prediction["entities"]):
            words = range(span.start, span.end)
            out.append(_entity_target(f"{entity['type']}: {entity['text']}", [position[w] for w in words],
                                      [labels.index(tags[w]) for w in words]))
        return out
    raise SlimtuneError(f"task {task.name} has no labels to explain")


def baseline_ids(input_ids: list[int], tokenizer) -> list[int]:
    """The reference input x': special tokens kept, every other piece the padding token."""
    special = tokenizer.get_special_tokens_mask(input_ids, already_has_special_tokens=True)
    return [i if s else tokenizer.pad_token_id for i, s in zip(input_ids, special)]


@dataclass
class Explainable:
    """What explaining needs of a model, however it is held (a loaded run, or an adapter a server shares a base
    with): its task, labels, recorded config, tokenizer and window, a forward pass from token ids to logits, and
    the input-embedding layer the path integral runs through."""

    task: object
    labels: list[str]
    config: dict
    tokenizer: object
    max_length: int
    # (input_ids [B, T], attention_mask [B, T], token_type_ids [B, T] | None) → logits [B, C] or [B, T, C]
    forward: Callable[..., torch.Tensor]
    embeddings: torch.nn.Module


def of_task_model(model, task, labels: list[str], config: dict, tokenizer, max_length: int) -> Explainable:
    """A whole task model (backbone and head, as `load_adapter` builds it)."""
    model = model.eval()

    def forward(input_ids, attention_mask, token_type_ids=None):
        return model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    return Explainable(task, labels, config, tokenizer, max_length, forward, model.backbone.get_input_embeddings())


def from_loaded(loaded) -> Explainable:
    """A run loaded by `load_adapter`."""
    return of_task_model(loaded.model, loaded.task, loaded.labels, loaded.config, loaded.backbone.tokenizer,
                         loaded.backbone.max_length)


def integrated_gradients(model: Explainable, feature: dict, baseline: list[int], targets: list[Target],
                         steps: int) -> list[tuple[list[float], float, float, float]]:
    """(per-token attributions, F(x), F(x'), delta) of each target, for one unpadded feature."""
    from captum.attr import LayerIntegratedGradients

    ids = torch.tensor([feature["input_ids"]])  # [1, T]
    reference = torch.tensor([baseline])
    mask = torch.ones_like(ids)
    types = torch.tensor([feature["token_type_ids"]]) if "token_type_ids" in feature else None
    out = []
    for _, score_of in targets:
        def forward(input_ids, attention_mask, token_type_ids=None):
            return score_of(model.forward(input_ids, attention_mask, token_type_ids))

        ig = LayerIntegratedGradients(forward, model.embeddings)
        attributions, delta = ig.attribute(ids, baselines=reference, additional_forward_args=(mask, types),
                                           n_steps=steps, return_convergence_delta=True,
                                           internal_batch_size=max(1, min(steps, TOKENS_PER_PASS // ids.shape[1])))
        with torch.no_grad():
            score, baseline_score = forward(ids, mask, types).item(), forward(reference, mask, types).item()
        out.append((attributions.sum(-1)[0].tolist(), score, baseline_score, delta.item()))
    return out


def _chosen_label(name: str, labels: list[str]) -> Target:
    if name not in labels:
        raise SlimtuneError(f"target {name!r} is not a label of this adapter; its labels: {', '.join(labels)}")
    return _label_target(name, labels.index(name))


def explain(loaded, texts: list[str], steps: int = 50, target: str | None = None) -> list[dict]:
    """For each text: its prediction and one `Explanation` per target (see `targets_for`; `target`: explain that
    label instead, classify and multilabel only). `loaded`: a run from `load_adapter`, or an `Explainable`."""
    model = loaded if isinstance(loaded, Explainable) else from_loaded(loaded)
    if steps < 1:
        raise SlimtuneError(f"--steps must be at least 1, got {steps}")
    task = model.task
    if task.generates_text:
        raise SlimtuneError(f"{task.name} adapters generate text; explain works with classify, multilabel and ner")
    if target is not None and task.kind == TAGGING:
        raise SlimtuneError("a target label applies to classify and multilabel adapters; ner explains each entity")
    results = []
    for text in texts:
        features = task.encode_texts([text], model.tokenizer, model.max_length)
        if len(features) != 1:
            raise SlimtuneError(f"{text[:40]!r}...: too long to explain in one model window "
                                f"({model.max_length} tokens)" if features else f"{text!r}: no words")
        feature = features[0]
        ids = torch.tensor([feature["input_ids"]])
        types = torch.tensor([feature["token_type_ids"]]) if "token_type_ids" in feature else None
        with torch.no_grad():
            logits = model.forward(ids, torch.ones_like(ids), types)[0]  # [C] or [T, C]
        options = {"scheme": tag_schemes.INTERNAL_SCHEME} if task.kind == TAGGING else {}
        prediction = task.decode([text], [feature], [logits], model.labels, model.config, **options)[0]
        targets = ([_chosen_label(target, model.labels)] if target is not None
                   else targets_for(task, feature, prediction, model.labels))
        tokens = model.tokenizer.convert_ids_to_tokens(feature["input_ids"])
        reference = baseline_ids(feature["input_ids"], model.tokenizer)
        explanations = [Explanation(name, tokens, *values) for (name, _), values in
                        zip(targets, integrated_gradients(model, feature, reference, targets, steps))]
        results.append({"text": text, "prediction": prediction, "explanations": explanations})
    return results
