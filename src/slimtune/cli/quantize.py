"""`slimtune quantize`: an int8 copy of a trained run for CPU inference, measured against fp32."""

HELP = """Quantize a trained run for CPU inference with dynamic int8 linear layers (PyTorch's
quantize_dynamic). The adapter is merged into its base first where the method allows.

The output is a run directory like the input (the fp32 adapter plus "quantize": "int8"
in adapter_config.json): `eval`, `predict` and friends quantize it as they load it, as
int8 layers have no safetensors form. quantize_report.json holds the encoder size,
forward latency and, with --data, the quality of fp32 and int8 side by side.
"""


def register(sub) -> None:
    import argparse

    from slimtune.cli.common import add_reader_flags, add_threads_flag

    p = sub.add_parser("quantize", help="int8 inference copy of a run, measured against fp32", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, metavar="DIR", help="run directory written by `slimtune train`")
    p.add_argument("--out", required=True, metavar="DIR", help="new run directory to write")
    p.add_argument("--data", metavar="PATH", help="labelled data to compare quality on (default: no quality)")
    p.add_argument("--model", metavar="ID|PATH", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--batch-size", type=int, default=64, help="evaluation and latency batch size")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace a previous slimtune output in --out")
    add_reader_flags(p)
    add_threads_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    import json
    import sys

    from slimtune.cli.common import reader_options
    from slimtune.compression.quantize_run import format_quantize_report, quantize_adapter

    report = quantize_adapter(args.adapter, args.out, args.model, args.data, reader_options(args), args.batch_size,
                              overwrite=args.overwrite)
    print(json.dumps(report) if args.json else format_quantize_report(report))
    print(f"int8 run directory written to {args.out}", file=sys.stderr)
    return 0
