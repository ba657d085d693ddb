"""`slimtune export`: an adapter in another tool's format: a Hugging Face PEFT adapter directory, merged, or ONNX."""

FORMATS = ("peft", "merged", "onnx")


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="write an adapter as a PEFT adapter directory or a merged model",
        description="--format peft: a Hugging Face PEFT adapter directory (adapter_config.json, "
                    "adapter_model.safetensors, README.md model card) that transformers + peft load, for the "
                    "methods that have a peft form (`slimtune methods` names it). --format merged: the adapter folded into the base weights, a "
                    "standalone transformers model (the same as `slimtune merge`), for every mergeable method. "
                    "--format onnx (classify, ner; extra `onnx`): the merged model with its head as one ONNX graph, "
                    "batch and sequence axes dynamic, for ONNX Runtime: model.onnx (fp32), model_int8.onnx "
                    "(dynamic int8, weights per channel), the tokenizer and onnx_config.json (labels, inputs).")
    p.add_argument("--adapter", required=True, metavar="DIR", help="a slimtune run directory")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--task-name", metavar="NAME", help="the task to export of a multi-task adapter")
    p.add_argument("--overwrite", action="store_true", help="replace a previous slimtune output in --out")
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.format == "merged":
        from slimtune.cli import merge

        return merge.run(args)
    if args.format == "onnx":
        return _onnx(args)
    from slimtune.runs.formats.peft_export import export_peft

    out = export_peft(args.adapter, args.out, args.model, args.task_name, args.overwrite)
    print(f"peft adapter written to {out}")
    return 0


def _onnx(args) -> int:
    from pathlib import Path

    from slimtune.models.onnx_runtime import require_onnx
    from slimtune.ownership import check_out, new_output
    from slimtune.runs.adapter_files import load_adapter
    from slimtune.runs.onnx_export import write_onnx_export

    require_onnx()
    out = Path(args.out)
    check_out(out, args.overwrite)
    loaded = load_adapter(args.adapter, args.model, task_name=args.task_name)
    with new_output(out, "onnx-export", args.overwrite) as tmp:  # written beside --out, then swapped in whole
        write_onnx_export(loaded, Path(tmp))
    print(f"ONNX model written to {out}")
    return 0
