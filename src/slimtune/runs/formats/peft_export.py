"""`slimtune export --format peft`: a run directory written as a Hugging Face PEFT adapter directory.

Out: adapter_config.json and adapter_model.safetensors in peft's names (the method's part comes from its
`peft_mapping`), the task head as peft saves it (`modules_to_save`: ner's token classifier; classify's
mean-pooled head has no transformers class and is written beside it as classifier_head.safetensors/.json,
as `slimtune merge` does), README.md (a model card) and slimtune_config.json (the run's own config, which
slimtune reads back for label names, pooling and tag scheme when the directory is imported).
"""

import json
from pathlib import Path

import torch

from slimtune.methods.adaptation import head_parameters
from slimtune.atomic import write_json, write_safetensors
from slimtune.errors import SlimtuneError
from slimtune.runs.formats.model_card import model_card
from slimtune.runs.formats.peft_layout import peft_layout
from slimtune.methods.peft_mapping_base import PROMPT_PREFIX, TUNER_PREFIX
from slimtune.models.loading import DEFAULT_MODEL, resolve_model_path
from slimtune.ownership import check_out, new_output

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
SLIMTUNE_SIDECAR = "slimtune_config.json"
CLASSIFIER_HEAD = "classifier_head.safetensors"
CLASSIFIER_HEAD_JSON = "classifier_head.json"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PEFT_HEAD_USAGE = (
    "model = PeftModel.from_pretrained(transformers.AutoModel.from_pretrained(base_model_name_or_path), dir); "
    "h = model(**batch).last_hidden_state, without its first num_virtual_tokens positions for prompt tuning; "
    "pooled = masked mean of h over attention_mask (pooling 'mean'), h[:, 0] ('cls') or pooler_output ('pooler'); "
    "logits = pooled @ weight.T + bias with weight, bias from classifier_head.safetensors"
)
MERGED_INSTEAD = "use `slimtune export --format merged` (the same as `slimtune merge`) for a standalone model"


def peft_base_name(spec: str | None) -> str:
    """`base_model_name_or_path`: a hub id as given, a local model (a converted GGUF too) as its absolute path;
    the bundled MiniLM by its hub id, whose weights it ships."""
    spec = spec or DEFAULT_MODEL
    if spec.lower() in (DEFAULT_MODEL, MINILM_HUB_ID.lower()):
        return MINILM_HUB_ID
    path = Path(resolve_model_path(spec))
    return str(path.resolve()) if path.exists() else spec


def run_steps(run_dir: Path) -> int | None:
    """The optimizer steps the run took, from metrics.json when it says."""
    try:
        steps = json.loads((Path(run_dir) / "metrics.json").read_text()).get("steps")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None


def peft_directory(loaded, run_dir: Path, model_spec: str | None = None) -> dict[str, object]:
    """{file name: dict (JSON), tensors (safetensors) or str (text)} of the peft directory for a loaded run."""
    method, config = loaded.method, loaded.config
    mapping = method.peft_mapping
    if mapping is None:
        instead = MERGED_INSTEAD if method.mergeable else (
            "it cannot be merged either, so serve it with slimtune (`slimtune serve`, `predict`, `eval`)")
        raise SlimtuneError(f"peft has no form for method {method.name}; {instead}")
    if config.get("base_quantize") or config.get("quantize"):
        raise SlimtuneError("an adapter tied to an int8 base has no peft form; export the fp32 run it came from")
    model, labels = loaded.model, loaded.labels
    layout = peft_layout(loaded.task.name, loaded.backbone.model.config, len(labels), getattr(model, "pooling", None))
    fields, tensors = mapping.export(method, method.export_state_dict(model.backbone), layout, model.backbone,
                                    run_steps(run_dir))
    prefix = PROMPT_PREFIX if mapping.prompt_learning else TUNER_PREFIX
    files: dict[str, object] = {}
    modules_to_save = []
    for name, param in head_parameters(model).items():
        if name.startswith("backbone."):  # the pooler, when a classify run pools through it
            path = name.removeprefix("backbone.")
            tensors[prefix + layout.peft_module(path)] = param.detach()
            modules_to_save.append(layout.peft_module(path.split(".")[0]))
    if layout.head_name:  # ner, classify through the pooler: peft's task model has the head; saved as peft saves it
        head = model.head[-1]
        tensors[f"{prefix}{layout.head_name}.weight"] = head.weight.detach()
        tensors[f"{prefix}{layout.head_name}.bias"] = head.bias.detach()
        modules_to_save.append(layout.head_name)
    elif loaded.task.name == "classify":
        head = model.head[-1]
        files[CLASSIFIER_HEAD] = {"weight": head.weight.detach(), "bias": head.bias.detach()}
        files[CLASSIFIER_HEAD_JSON] = {"pooling": model.pooling, "labels": labels, "usage": PEFT_HEAD_USAGE}
    spec = model_spec or config.get("base_model")
    peft_config = {**fields, "task_type": layout.task_type, "base_model_name_or_path": peft_base_name(spec),
                   "modules_to_save": sorted(set(modules_to_save)) or None, "inference_mode": True,
                   "revision": None}
    files[PEFT_CONFIG] = peft_config
    files[PEFT_WEIGHTS] = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    files[SLIMTUNE_SIDECAR] = config
    files["README.md"] = model_card(run_dir, config, peft_config, loaded.task.name)
    return files


def write_directory(files: dict[str, object], out: Path, overwrite: bool = False) -> None:
    """Write all files into a marked directory next to `out`, then swap it into place (nothing half-written;
    `out` must be new, empty, or with `overwrite` a previous slimtune output)."""
    with new_output(Path(out), "export", overwrite) as tmp:
        for name, content in files.items():
            if isinstance(content, str):
                (tmp / name).write_text(content, encoding="utf-8")
            elif name.endswith(".safetensors"):
                write_safetensors(tmp / name, content, metadata={"format": "pt"})
            else:
                write_json(tmp / name, content)


def export_peft(run_dir: Path, out: Path, model_spec: str | None = None, task_name: str | None = None,
                overwrite: bool = False) -> Path:
    from slimtune.runs.adapter_files import load_adapter

    check_out(Path(out), overwrite)
    loaded = load_adapter(run_dir, model_spec, task_name=task_name)
    write_directory(peft_directory(loaded, Path(run_dir), model_spec), Path(out), overwrite)
    return Path(out)
