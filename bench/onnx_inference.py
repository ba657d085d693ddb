"""CPU inference of a classify adapter: PyTorch fp32, ONNX Runtime fp32 and dynamic int8, and transformers'
pipeline, on the same held-out texts in one run: eval examples/s (tokenizing included) and accuracy of each.

slimtune's backends encode the texts and run length-grouped batches (`slimtune eval`'s path, --backend). The
peer is transformers' `pipeline("feature-extraction")` on the merged model (`slimtune merge`: the encoder, whose
mean pooling and linear head have no transformers class, applied to its output here), batched as the pipeline
batches.

    python bench/onnx_inference.py --adapter runs/sst2-lora --data data/sst2/heldout_2k.tsv.gz --threads 1
"""

import argparse
import json
import tempfile
import time

import torch

from slimtune.data.table import read_labelled_texts
from slimtune.runs.adapter_files import load_adapter
from slimtune.runs.onnx_export import use_backend


def run_slimtune(args, backend: str, rows) -> dict:
    loaded = load_adapter(args.adapter)
    if backend == "pytorch":  # merged, as the ONNX export (which merges itself) and the pipeline's model are
        from slimtune.models.int8_inference import merge_for_inference

        merge_for_inference(loaded)
    started = time.perf_counter()
    use_backend(loaded, backend)
    prepare = time.perf_counter() - started
    tokenizer = loaded.backbone.tokenizer
    started = time.perf_counter()
    features = loaded.task.encode(rows, tokenizer, loaded.labels, loaded.backbone.max_length)
    logits = torch.tensor(loaded.task.outputs(loaded.model, features, tokenizer.pad_token_id, args.batch_size))
    seconds = time.perf_counter() - started
    gold = torch.tensor([f["labels"] for f in features])
    return {"examples_per_second": len(rows) / seconds, "seconds": seconds, "prepare_seconds": prepare,
            "accuracy": (logits.argmax(-1) == gold).float().mean().item()}


def run_pipeline(args, rows, labels) -> dict:
    from safetensors.torch import load_file
    from transformers import pipeline

    from slimtune.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        assert main(["merge", "--adapter", args.adapter, "--out", f"{tmp}/merged"]) == 0
        head = load_file(f"{tmp}/merged/classifier_head.safetensors")
        extractor = pipeline("feature-extraction", model=f"{tmp}/merged", device="cpu", batch_size=args.batch_size)
        texts = [r.text for r in rows]
        started = time.perf_counter()
        # batched outputs keep the batch's padding, which mean pooling must skip: each text's own token count
        lengths = [len(ids) for ids in extractor.tokenizer(texts, truncation=True)["input_ids"]]
        predicted = []
        for states, length in zip(extractor(texts, return_tensors=True, truncation=True), lengths):
            pooled = states[0, :length].mean(0)  # [T, H] of one text → [H]: the checkpoint's mean pooling
            predicted.append(int((pooled @ head["weight"].T + head["bias"]).argmax()))
        seconds = time.perf_counter() - started
    gold = [labels.index(r.label) for r in rows]
    return {"examples_per_second": len(rows) / seconds, "seconds": seconds,
            "accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(rows)}


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="a classify run directory")
    parser.add_argument("--data", default="data/sst2/heldout_2k.tsv.gz")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, help="only the first N texts")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = load_adapter(args.adapter).labels
    rows = read_labelled_texts(args.data)[: args.examples]
    results = {backend: run_slimtune(args, backend, rows)
               for backend in ("pytorch", "onnxruntime", "onnxruntime-int8")}
    results["transformers-pipeline"] = run_pipeline(args, rows, labels)
    base = results["pytorch"]["examples_per_second"]
    print(f"{len(rows)} texts of {args.data}, batch {args.batch_size}, {args.threads} thread(s)")
    print(f"{'backend':24} {'examples/s':>10} {'vs pytorch':>10} {'accuracy':>9}")
    for name, r in results.items():
        print(f"{name:24} {r['examples_per_second']:10.1f} {r['examples_per_second'] / base:9.2f}x "
              f"{r['accuracy']:9.4f}")
    gap = 100 * (results["onnxruntime-int8"]["accuracy"] - results["onnxruntime"]["accuracy"])
    print(f"ONNX Runtime int8 accuracy minus fp32's: {gap:+.2f} points")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": args.data, "threads": args.threads, "batch_size": args.batch_size, **results}, f,
                      indent=1)


if __name__ == "__main__":
    main_()
