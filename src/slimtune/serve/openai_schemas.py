"""Request bodies of the OpenAI-compatible endpoints, as OpenAI's API reference defines them (the subset served;
fields a client may send that do not apply here are accepted and ignored, as other OpenAI-compatible servers do,
except those that ask for more in the answer than is served: `logprobs`, `echo`, `n` > 1, `dimensions`),
bounded by the server's limits. Responses are plain dicts in OpenAI's shapes."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from slimtune.serve.schemas import Limits


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[dict] = Field(description="text, or a list of {'type': 'text', 'text': ...} parts")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are served")
            parts.append(part["text"])
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


# Fields whose request would change the answer's shape are refused (a 400 naming them), not ignored like the rest.
NOT_SERVED = "not served"


def _sampling_fields(limits: Limits) -> dict:
    return {
        "model": (str, Field(min_length=1, max_length=4096,
                             description="an adapter name or a base model (GET /v1/models)")),
        "max_tokens": (int | None, Field(default=None, ge=1, le=limits.max_new_tokens,
                                         description="most new tokens (default: 16 for completions, the server's "
                                                     "--max-new-tokens for chat)")),
        "max_completion_tokens": (int | None, Field(default=None, ge=1, le=limits.max_new_tokens)),
        "temperature": (float, Field(default=1.0, ge=0, le=2, allow_inf_nan=False,
                                     description="0: greedy decoding (deterministic)")),
        "top_p": (float, Field(default=1.0, gt=0, le=1, allow_inf_nan=False)),
        "seed": (int | None, Field(default=None, ge=0, le=2**63 - 1)),
        "stop": (str | list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None,
                 Field(default=None, max_length=4, description="up to 4 strings; the answer ends before the first")),
        "n": (int, Field(default=1, ge=1, le=1, description="only 1 is served")),
        "stream": (bool, False),
        "stream_options": (StreamOptions | None, None),
    }


def chat_request_model(limits: Limits) -> type[BaseModel]:
    from pydantic import create_model

    return create_model(
        "ChatCompletionRequest", __config__=ConfigDict(extra="ignore"),
        messages=(list[ChatMessage], Field(min_length=1, max_length=limits.max_inputs)),
        logprobs=(Literal[False] | None, Field(default=None, description=NOT_SERVED)),
        top_logprobs=(None, Field(default=None, description=NOT_SERVED)),
        **_sampling_fields(limits))


def completion_request_model(limits: Limits) -> type[BaseModel]:
    from pydantic import create_model

    Text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_chars)]
    TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=limits.max_chars)]
    return create_model(
        "CompletionRequest", __config__=ConfigDict(extra="ignore"),
        prompt=(Text | list[Text] | TokenIds | list[TokenIds],
                Field(description="one prompt, as text or token ids (a list of one is accepted)")),
        echo=(Literal[False], Field(default=False, description=NOT_SERVED + ": the text holds the new tokens only")),
        logprobs=(None, Field(default=None, description=NOT_SERVED)),
        **_sampling_fields(limits))


def embedding_request_model(limits: Limits) -> type[BaseModel]:
    from pydantic import create_model

    Text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_chars)]
    return create_model(
        "EmbeddingRequest", __config__=ConfigDict(extra="ignore"),
        model=(str, Field(min_length=1, max_length=4096)),
        input=(Text | list[Text], Field(description=f"a text or up to {limits.max_inputs} texts")),
        encoding_format=(Literal["float", "base64"], "float"),
        dimensions=(int | None, Field(None, ge=1, description="if given, the model's own vector size: vectors are "
                                                              "never truncated")))


class LoadLoRARequest(BaseModel):
    """vLLM's runtime adapter loading."""

    model_config = ConfigDict(extra="ignore")
    lora_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    lora_path: str = Field(min_length=1, max_length=4096)


class UnloadLoRARequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lora_name: str = Field(min_length=1, max_length=64)
