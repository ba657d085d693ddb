"""`POST /v1/explain`: Integrated Gradients of a served adapter's predictions, the numbers `slimtune explain --json`
gives for the same adapter and text (explain/attributions.py does the work; this module only says how to run a
served adapter with gradients).

An adapter with its own copy of the base runs that copy. A shared one runs the shared base with its slot's row
updates on every row, then its own head (the same function as its own copy, as /v1/predict relies on). Either
way the work runs in the model thread (`MicroBatcher.exclusive`), so no batch uses the shared base meanwhile.
"""

from slimtune.errors import SlimtuneError
from slimtune.explain.attributions import Explainable, explain, of_task_model
from slimtune.serve.served import ONNX, SHARED, ServedAdapter, UnknownAdapter


class CannotExplain(SlimtuneError):
    """This adapter, or this server, cannot give explanations (a 4xx: the request asks for what is not offered)."""


def check_explainable(adapter: ServedAdapter) -> None:
    """Refuse before any work what explaining cannot do: generation adapters, int8 bases, a missing captum."""
    if adapter.generates:
        raise CannotExplain(f"adapter {adapter.name!r} is a causal-lm adapter: POST /v1/explain serves classify, "
                            "multilabel and ner adapters")
    if adapter.serving == ONNX:
        raise CannotExplain(f"adapter {adapter.name!r} runs in ONNX Runtime, which computes no gradients; explain it "
                            "from a server with --backend pytorch (or with `slimtune explain`)")
    if adapter.inference_int8:
        raise CannotExplain(f"adapter {adapter.name!r} is served with dynamic int8 layers, which have no gradients; "
                            "explain it from a server without --inference-int8 (or with `slimtune explain`)")
    try:
        import captum  # noqa: F401  (an optional extra)
    except ImportError:
        raise CannotExplain("this server cannot explain: captum is not installed "
                            "(pip install 'slimtune[explain]')") from None


def explainable(adapter: ServedAdapter) -> Explainable:
    """The served adapter as explain/attributions.py needs it."""
    if adapter.serving != SHARED:
        return of_task_model(adapter.model, adapter.task, adapter.labels, adapter.config, adapter.tokenizer,
                             adapter.max_length)
    shared, head = adapter.shared_base, adapter.model.eval()

    def forward(input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        with shared.rows_of([adapter.slot] * input_ids.shape[0]):
            hidden = shared.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                     **extra).last_hidden_state  # [B, T, H]
        return head.from_hidden(hidden, attention_mask)

    embeddings = shared.backbone.get_input_embeddings()
    return Explainable(adapter.task, adapter.labels, adapter.config, adapter.tokenizer, adapter.max_length, forward,
                       embeddings)


def explain_served(adapter: ServedAdapter, texts: list[str], steps: int, target: str | None) -> list[dict]:
    """Run in the model thread: per text, its prediction and explanations, as `explain` gives them."""
    if adapter.removed:
        raise UnknownAdapter(f"adapter {adapter.name!r} was unloaded before the request ran")
    return explain(explainable(adapter), texts, steps, target)
