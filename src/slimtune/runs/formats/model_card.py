"""README.md for an exported adapter: base model, method and options, data and metrics of the run, and how to load it."""

import json
from pathlib import Path

LOADERS = {
    "FEATURE_EXTRACTION": "AutoModel",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
}


def _read_json(path: Path) -> dict:
    """A run's metrics.json or train_config.json, or {} when missing or unreadable (the card is still written)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _usage(peft_config: dict, task: str, labels: list) -> str:
    base, loader = peft_config["base_model_name_or_path"], LOADERS[peft_config["task_type"]]
    extra = f", num_labels={len(labels)}" if peft_config["task_type"] in ("TOKEN_CLS", "SEQ_CLS") else ""
    lines = ["```python", f"from transformers import {loader}", "from peft import PeftModel", "",
             f'base = {loader}.from_pretrained("{base}"{extra})', 'model = PeftModel.from_pretrained(base, "DIR")']
    if peft_config["task_type"] == "FEATURE_EXTRACTION":
        lines += ["# slimtune's sentence classifier: pool last_hidden_state as classifier_head.json says, then",
                  "# logits = pooled @ weight.T + bias with weight, bias from classifier_head.safetensors"]
    if peft_config["task_type"] in ("TOKEN_CLS", "SEQ_CLS"):
        lines += ["# the labels, in order: " + ", ".join(map(str, labels))]
    if peft_config["peft_type"] == "PROMPT_TUNING" and task != "causal-lm":
        lines += [f"# outputs start with the {peft_config['num_virtual_tokens']} prompt positions: drop them"]
    return "\n".join(lines + ["```"])


def model_card(run_dir: Path, config: dict, peft_config: dict, task: str) -> str:
    metrics = _read_json(Path(run_dir) / "metrics.json")
    training = _read_json(Path(run_dir) / "train_config.json")
    base = peft_config["base_model_name_or_path"]
    options = ", ".join(f"{k}={v}" for k, v in config.get("options", {}).items()) or "none"
    scores = {k: v for k, v in metrics.items() if k.startswith(("best_dev_", "test_")) and isinstance(v, (int, float))}
    data = [f"- train: `{training['train']}`" if training.get("train") else None,
            f"- dev: `{training['dev']}`" if training.get("dev") else None,
            f"- examples: {metrics['train_examples']} train, {metrics.get('dev_examples', '?')} dev"
            if "train_examples" in metrics else None,
            f"- epochs {training.get('epochs')}, learning rate {metrics.get('lr', training.get('lr'))}, "
            f"batch size {training.get('batch_size')}, seed {training.get('seed')}" if training else None]
    data = [line for line in data if line] or ["- not recorded with this run"]
    lines = [
        "---", f"base_model: {base}", "library_name: peft", "tags:", "- slimtune", f"- {config.get('method')}",
        f"- {task}", "---", "",
        f"# {config.get('method')} adapter for {base}", "",
        f"Trained with slimtune {config.get('slimtune_version', '')} (task `{task}`, method `{config.get('method')}`) "
        f"and exported as a PEFT `{peft_config['peft_type']}` adapter (task type `{peft_config['task_type']}`).", "",
        "## Method", "", f"- options: {options}",
        *([f"- trainable parameters: {metrics['trainable_parameters']:,}"] if "trainable_parameters" in metrics else []),
        "", "## Data", "", *data, "", "## Metrics", "",
        *([f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in sorted(scores.items())]
          or ["- not recorded with this run"]),
        "", "## Use", "", _usage(peft_config, task, config.get("labels") or []), "",
        "slimtune itself loads this directory wherever it takes `--adapter` (`slimtune_config.json` keeps the run's "
        "labels and settings).", "",
    ]
    return "\n".join(lines)
