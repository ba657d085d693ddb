"""The schema of adapter_config.json: types and ranges, checked before anything is built from it.

Pydantic checks the shape (every field's type, ranges, a label list of unique strings, finite
numbers); `check_meaning` then checks what needs the registries: a known task, a known method
whose options its own `Options.validate` accepts, a method the task can take. Other keys a
task or the multi-task trainer recorded (task weights, sampling) are kept as written.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from slimtune.data.tag_schemes import SCHEMES
from slimtune.errors import SlimtuneError
from slimtune.tasks.multitask.files import MULTI

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
OptionValue = Scalar | list[Scalar] | None  # `--set` values as `options_dict` writes them
Labels = Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(max_length=100_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)


class TaskEntry(_Strict):
    """One task of a run: what it is, its labels, and what it recorded at training (a tag scheme)."""

    task: StrictStr
    labels: Labels
    scheme: Literal[SCHEMES] | None = None

    @model_validator(mode="after")
    def _unique_labels(self):
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self


class RunConfig(_Strict):
    """adapter_config.json of a single-task run, or (task "multi") of a multi-task run with its `tasks`."""

    slimtune_version: StrictStr | None = None
    task: StrictStr
    method: StrictStr
    options: dict[StrictStr, OptionValue]
    base_model: StrictStr | None = None
    base_fingerprint: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{8,64}$")]
    pooling: Literal["mean", "cls", "pooler"] | None = None
    max_length: Annotated[StrictInt, Field(ge=1, le=10_000_000)] | None = None
    labels: Labels | None = None
    scheme: Literal[SCHEMES] | None = None
    threshold: Annotated[StrictFloat, Field(gt=0, lt=1)] | None = None  # multilabel: tuned on dev
    inference_int8: Literal["int8"] | None = None
    base_int8: Literal["int8"] | None = None
    quantize: Literal["int8"] | None = None  # inference_int8 before 0.2
    base_quantize: Literal["int8"] | None = None  # base_int8 before 0.2
    tasks: dict[StrictStr, TaskEntry] | None = None
    sharing: Literal["shared", "per-task"] | None = None

    @model_validator(mode="after")
    def _single_or_multi(self):
        if self.task == MULTI:
            if not self.tasks:
                raise ValueError("a multi-task run needs a non-empty `tasks`")
            if self.sharing is None:
                raise ValueError("a multi-task run needs `sharing`")
        elif self.labels is None:
            raise ValueError("field `labels` is required")
        elif len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.inference_int8_scheme and self.base_int8_scheme:
            raise ValueError("`inference_int8` and `base_int8` exclude each other")
        return self

    @property
    def base_int8_scheme(self) -> str | None:
        """Trained on (and used with) a weight-only int8 frozen base (see runs/int8_keys.py)."""
        return self.base_int8 or self.base_quantize

    @property
    def inference_int8_scheme(self) -> str | None:
        """Saved by `slimtune quantize`: merged where possible, then dynamic int8 when loaded."""
        return self.inference_int8 or self.quantize


def validation_error_line(error) -> str:
    """A pydantic ValidationError as one line: where the first problem is and what it is."""
    first = error.errors()[0]
    where = ".".join(map(str, first["loc"])) or "the file"
    more = error.error_count() - 1
    return f"{where}: {first['msg']}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def option_strings(options: dict) -> dict[str, str]:
    """Recorded option values as `--set` strings, for the method's own parser and checks."""
    return {key: ",".join(map(str, value)) if isinstance(value, list) else str(value)
            for key, value in options.items()}


def check_meaning(config: RunConfig) -> None:
    """Known task(s) and method, options the method accepts, a method every task can take, labels where the task
    predicts them; SlimtuneError if not."""
    from slimtune.methods.registry import create_method
    from slimtune.tasks import get_task

    method = create_method(config.method, option_strings(config.options))
    entries = list(config.tasks.values()) if config.task == MULTI else [config]
    for entry in entries:
        task = get_task(entry.task)
        task.check_method(method)
        if not task.generates_text and not entry.labels:  # its head would have no rows to predict
            raise SlimtuneError(f"labels: a {task.name} run needs at least one label")
        if task.generates_text and config.pooling is not None:  # the LM head reads every position, none pooled
            raise SlimtuneError(f"pooling: a {task.name} run pools nothing, got {config.pooling!r}")
