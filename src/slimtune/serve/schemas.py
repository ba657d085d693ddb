"""Request and response bodies. Request bounds are set at start-up, so the request models are built then;
the OpenAPI schema states them, and anything outside them is a 422 naming the field."""

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
AdapterName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


@dataclass(frozen=True)
class Limits:
    max_inputs: int = 64  # texts (or prompts) per request
    max_chars: int = 2000  # characters per text
    max_new_tokens: int = 256  # tokens a generate request may ask for, per prompt
    max_explain_inputs: int = 8  # texts per explain request (each costs n_steps forward and backward passes)
    max_explain_steps: int = 200  # n_steps an explain request may ask for

    @property
    def max_body_bytes(self) -> int:
        """Room for every input at its longest, each character written as a 6-byte \\uXXXX escape."""
        return self.max_inputs * (self.max_chars * 6 + 8) + 64 * 1024


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or only whitespace")
    return text


def _text(limits: Limits):
    return Annotated[str, StringConstraints(min_length=1, max_length=limits.max_chars), AfterValidator(_not_blank)]


def predict_request_model(limits: Limits) -> type[BaseModel]:
    Text = _text(limits)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        adapter: AdapterName = Field(description="name of a loaded classify or ner adapter (see GET /v1/adapters)")
        inputs: list[Text] = Field(min_length=1, max_length=limits.max_inputs,
                                   description=f"1 to {limits.max_inputs} texts of 1 to {limits.max_chars} characters")

    return PredictRequest


def explain_request_model(limits: Limits) -> type[BaseModel]:
    Text = _text(limits)

    class ExplainRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        adapter: AdapterName = Field(description="name of a loaded classify, multilabel or ner adapter")
        inputs: list[Text] = Field(min_length=1, max_length=limits.max_explain_inputs,
                                   description=f"1 to {limits.max_explain_inputs} texts of 1 to {limits.max_chars} "
                                               "characters, each within one model window")
        n_steps: int = Field(default=min(50, limits.max_explain_steps), ge=1, le=limits.max_explain_steps,
                             description="steps of the Integrated Gradients path integral (more: smaller delta)")
        target: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="classify and multilabel: explain this label instead of the "
                                               "predicted one(s)")

    return ExplainRequest


# Sampling bounds: a temperature near 0 or a huge one overflows the softmax (use greedy decoding instead).
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
MAX_TOP_K = 1_000_000


def generate_request_model(limits: Limits) -> type[BaseModel]:
    Text = _text(limits)

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        adapter: AdapterName = Field(description="name of a loaded causal-lm adapter (see GET /v1/adapters)")
        prompts: list[Text] = Field(min_length=1, max_length=limits.max_inputs,
                                    description=f"1 to {limits.max_inputs} user messages of 1 to {limits.max_chars} "
                                                "characters, each answered on its own through the chat template")
        max_new_tokens: int = Field(default=min(64, limits.max_new_tokens), ge=1, le=limits.max_new_tokens,
                                    description="most tokens of each answer (it may stop earlier, at end of turn)")
        sample: bool = Field(default=False, description="sample the answer; false: greedy decoding, deterministic")
        temperature: float = Field(default=1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False,
                                   description="with sample: softmax temperature")
        top_p: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False,
                             description="with sample: nucleus probability mass")
        top_k: int = Field(default=0, ge=0, le=MAX_TOP_K,
                           description="with sample: keep the k likeliest tokens (0: all)")
        seed: int | None = Field(default=None, ge=0, le=2**63 - 1,
                                 description="with sample: seed for a reproducible draw")

    return GenerateRequest


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: AdapterName
    path: str = Field(min_length=1, max_length=4096,
                      description="adapter directory (adapter_config.json + adapter.safetensors) inside the allowed "
                                  "directory; relative paths are taken from there")


class ClassPrediction(BaseModel):
    label: str
    probability: float
    scores: dict[str, float]


class LabelSetPrediction(BaseModel):
    labels: list[str] = Field(description="the labels whose probability reaches the adapter's tuned threshold")
    scores: dict[str, float]


class Entity(BaseModel):
    type: str
    start: int = Field(description="character offset where the entity starts (a Python slice of the text)")
    end: int
    text: str
    score: float = Field(description="mean probability of the entity's word tags")


class EntityPrediction(BaseModel):
    entities: list[Entity]
    words: list[str]
    tags: list[str]


class PredictResponse(BaseModel):
    adapter: str
    task: str
    outputs: list[ClassPrediction | EntityPrediction | LabelSetPrediction] = Field(description="one per input, in order")


class TokenAttributions(BaseModel):
    target: str = Field(description="the label, or the entity (\"PER: anna\") whose score is explained")
    tokens: list[str] = Field(description="the tokenizer's pieces, special tokens included")
    attributions: list[float] = Field(description="per token; they sum to score - baseline_score, up to delta")
    score: float = Field(description="the target's score (a logit, or an entity's summed tag logits)")
    baseline_score: float = Field(description="the same score with every word piece replaced by padding")
    delta: float = Field(description="Integrated Gradients' convergence error: sum(attributions) - (score - "
                                     "baseline_score)")


class ExplainedText(BaseModel):
    text: str
    prediction: ClassPrediction | EntityPrediction | LabelSetPrediction = Field(
        description="as /v1/predict gives it (ner tags in IOB2)")
    explanations: list[TokenAttributions] = Field(description="one per predicted label or entity")


class ExplainResponse(BaseModel):
    adapter: str
    task: str
    n_steps: int
    outputs: list[ExplainedText] = Field(description="one per input, in order; each equal to a line of "
                                                     "`slimtune explain --json`")


class GeneratedText(BaseModel):
    text: str = Field(description="the answer, without the prompt or the end-of-turn token")


class GenerateResponse(BaseModel):
    adapter: str
    outputs: list[GeneratedText] = Field(description="one per prompt, in order")


class AdapterInfo(BaseModel):
    name: str
    task: str
    method: str
    labels: list[str]
    serving: str = Field(description="shared (rows join one base pass with other adapters' rows, each with its own "
                                     "row updates), own copy (its own copy of the base), merged, or merged, "
                                     "ONNX Runtime (--backend onnxruntime*)")
    base_model: str
    inference_int8: str | None = Field(description="int8: served with dynamic int8 linear layers")
    base_int8: str | None = Field(description="int8: trained on, and served with, a weight-only int8 frozen base")
    path: str


class AdapterList(BaseModel):
    base_model: str | None = Field(description="the encoder base classify and ner adapters share (null until one "
                                               "is loaded); causal-lm adapters each run on their own base_model")
    adapters: list[AdapterInfo]


class Health(BaseModel):
    status: str
    adapters: int


class ErrorBody(BaseModel):
    detail: str | list


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422)}
