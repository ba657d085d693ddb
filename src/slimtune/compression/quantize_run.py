"""`slimtune quantize`: an int8 copy of a run directory, with size, latency and quality against fp32."""

import shutil
from pathlib import Path

from slimtune.atomic import write_json
from slimtune.compression.measure import forward_latency_ms, synthetic_batch, torch_save_bytes
from slimtune.data.batching import pad_batch
from slimtune.errors import SlimtuneError
from slimtune.models.int8_inference import merge_for_inference
from slimtune.ownership import check_out, new_output
from slimtune.runs.adapter_files import ADAPTER_FILE, CONFIG_FILE, load_adapter, read_config
from slimtune.runs.formats.peft_import import resolve_adapter_dir
from slimtune.runs.int8_keys import INFERENCE_INT8, inference_int8_of

REPORT_FILE = "quantize_report.json"


def quantize_adapter(adapter_dir: str, out_dir: str, model_spec: str | None = None, data: str | None = None,
                     read_options: dict | None = None, batch_size: int = 64, scheme: str = "int8",
                     overwrite: bool = False) -> dict:
    """Measure fp32 (merged where mergeable) against int8 and write the int8 run directory with its report."""
    out = Path(out_dir)
    check_out(out, overwrite)
    adapter_dir = resolve_adapter_dir(adapter_dir, model_spec)  # a peft adapter directory, converted
    if inference_int8_of(read_config(adapter_dir)):
        raise SlimtuneError(f"{adapter_dir} is already quantized; give the fp32 run it came from")
    fp32 = load_adapter(adapter_dir, model_spec)
    merge_for_inference(fp32)
    int8 = load_adapter(adapter_dir, model_spec, quantize=scheme)
    pad_id = fp32.backbone.tokenizer.pad_token_id
    features = None
    if data:
        rows = fp32.task.read(data, **(read_options or {}))
        features = fp32.task.encode(rows, fp32.backbone.tokenizer, fp32.labels, fp32.backbone.max_length)
    batch = (pad_batch(features[:batch_size], pad_id) if features
             else synthetic_batch(fp32.model.backbone.config.vocab_size))
    report = {"adapter": str(adapter_dir), "quantize": scheme, "data": data,
              "latency_batch": "real" if features else f"synthetic {list(batch['input_ids'].shape)}"}
    for name, loaded in (("fp32", fp32), (scheme, int8)):
        entry = {"encoder_bytes": torch_save_bytes(loaded.model.backbone),
                 "latency_ms": forward_latency_ms(loaded.model, batch)}
        if features:
            metrics = loaded.task.evaluate(loaded.model, features, pad_id, batch_size, loaded.labels)
            entry["quality"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        report[name] = entry

    with new_output(out, "quantize", overwrite) as tmp:
        shutil.copy2(Path(adapter_dir) / ADAPTER_FILE, tmp / ADAPTER_FILE)
        config = {**fp32.config, INFERENCE_INT8: scheme, "base_model": model_spec or fp32.config.get("base_model")}
        write_json(tmp / CONFIG_FILE, config)
        write_json(tmp / REPORT_FILE, report)
    return report


def format_quantize_report(report: dict) -> str:
    scheme = report["quantize"]
    fp32, low = report["fp32"], report[scheme]
    lines = [f"{'':<24}{'fp32':>12}{scheme:>12}{'change':>10}"]
    rows = [("encoder size (MiB)", fp32["encoder_bytes"] / 2**20, low["encoder_bytes"] / 2**20, "{:.2f}"),
            ("forward latency (ms)", fp32["latency_ms"], low["latency_ms"], "{:.1f}")]
    for key in fp32.get("quality", {}):
        if key != "examples":
            rows.append((key, fp32["quality"][key], low["quality"][key], "{:.4f}"))
    for label, a, b, fmt in rows:
        change = f"{100 * (b - a) / a:+.1f}%" if a else ""
        lines.append(f"{label:<24}{fmt.format(a):>12}{fmt.format(b):>12}{change:>10}")
    lines.append(f"latency: median of forward passes over a {report['latency_batch']} batch, task head included")
    return "\n".join(lines)
