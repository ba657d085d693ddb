"""`slimtune prune`: a smaller encoder, by magnitude (zeroed weights) or structure (removed heads and neurons)."""

HELP = """Prune a pretrained encoder and write a model directory that `--model` accepts, so
prune -> train (any method) -> eval is one pipeline.

  magnitude   zero the smallest |w| of the blocks' linear weights: exactly round(sparsity * n)
              of them, n counted over all blocks (--scope global) or per layer (--scope layer).
              Stored densely: the file keeps its size; the report counts non-zero weights.
  structured  remove whole attention heads and FFN neurons, shrinking the matrices. Give
              --heads N and/or --neurons N (totals over all layers), or --sparsity X for that
              fraction of both. Units are ranked by importance: with --data, the gradient of the
              task loss with respect to a gate on each head and neuron (Michel et al. 2019),
              measured on half of --examples sampled rows; without --data, by weight norms.
              --scope layer removes the same number from every layer; one head and one neuron
              always remain per layer.

The report (printed, and prune_report.json in --out) gives parameters, file size and the
median forward latency before and after; with --data also a linear probe's score (the task
head alone, fitted on half the sampled rows and scored on the other half), as a bare encoder
has no task quality of its own.

examples:
  slimtune prune --method structured --heads 36 --data data/sst2/train_8k.tsv.gz --out pruned/minilm-h36
  slimtune train --method lora --model pruned/minilm-h36 --train data/sst2/train_8k.tsv.gz --out runs/pruned-lora
  slimtune prune --method magnitude --sparsity 0.5 --out pruned/minilm-m50
"""


# compression.prune_run's METHODS and compression.magnitude's SCOPES, spelled out: importing them loads torch,
# which `slimtune --help` should not wait for (tests/cli/test_startup.py keeps them equal).
METHODS = ("magnitude", "structured")
SCOPES = ("global", "layer")


def register(sub) -> None:
    import argparse

    from slimtune.cli.common import add_reader_flags, add_threads_flag

    p = sub.add_parser("prune", help="prune weights, heads or FFN neurons of an encoder", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="ID|PATH", help="model to prune (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, metavar="DIR", help="new model directory to write")
    p.add_argument("--sparsity", type=float, metavar="X", help="fraction to remove, in [0, 1)")
    p.add_argument("--heads", type=int, metavar="N", help="structured: attention heads to remove in all")
    p.add_argument("--neurons", type=int, metavar="N", help="structured: FFN neurons to remove in all")
    p.add_argument("--scope", choices=SCOPES, default="global", help="rank over all layers, or per layer")
    p.add_argument("--data", metavar="PATH", help="labelled task data for importance and the probe")
    p.add_argument("--task", default="classify", help="task of --data: classify (default) or ner")
    p.add_argument("--examples", type=int, default=1024, metavar="N", help="rows sampled from --data")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace a previous slimtune output in --out")
    add_reader_flags(p)
    add_threads_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    import json
    import sys

    from slimtune.cli.common import reader_options
    from slimtune.compression.prune_run import PruneRequest, format_report, prune

    request = PruneRequest(out_dir=args.out, method=args.method, model=args.model, sparsity=args.sparsity,
                           heads=args.heads, neurons=args.neurons, scope=args.scope, data=args.data, task=args.task,
                           read_options=reader_options(args), examples=args.examples, batch_size=args.batch_size,
                           overwrite=args.overwrite)
    report = prune(request)
    print(json.dumps(report) if args.json else format_report(report))
    print(f"pruned model written to {args.out}", file=sys.stderr)
    return 0
