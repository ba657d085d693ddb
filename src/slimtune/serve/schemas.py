"""Request and response bodies. Request bounds are set at start-up, so the request models are built then;
the OpenAPI schema states them, and anything outside them is a 422 naming the field."""

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
AdapterName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


@dataclass(frozen=True)
class Limits:
    max_inputs: int = 64
    max_chars: int = 2000

    @property
    def max_body_bytes(self) -> int:
        """Room for every input at its longest, each character written as a 6-byte \\uXXXX escape."""
        return self.max_inputs * (self.max_chars * 6 + 8) + 64 * 1024


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or only whitespace")
    return text


def predict_request_model(limits: Limits) -> type[BaseModel]:
    Text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_chars), AfterValidator(_not_blank)]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        adapter: AdapterName = Field(description="name of a loaded adapter (see GET /v1/adapters)")
        inputs: list[Text] = Field(min_length=1, max_length=limits.max_inputs,
                                   description=f"1 to {limits.max_inputs} texts of 1 to {limits.max_chars} characters")

    return PredictRequest


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
    outputs: list[ClassPrediction | EntityPrediction] = Field(description="one per input, in order")


class AdapterInfo(BaseModel):
    name: str
    task: str
    method: str
    labels: list[str]
    serving: str = Field(description="shared-lora (one base pass shared with other LoRA adapters), own-model "
                                     "(its own copy of the base) or merged")
    path: str


class AdapterList(BaseModel):
    base_model: str
    adapters: list[AdapterInfo]


class Health(BaseModel):
    status: str
    adapters: int


class ErrorBody(BaseModel):
    detail: str | list


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422)}
