"""`slimtune tune`: search a method's options and the training settings with Optuna, maximising the dev metric."""

import argparse

from slimtune.cli.common import add_reader_flags, reader_options
from slimtune.cli.run_config import add_config_flag

HELP = """Search hyperparameters with Optuna (TPE sampler, median pruning on intermediate dev scores).

Searched: learning rate (around the method's default), batch size, epochs, and the method's rank, alpha,
dropout and targets where it has them. The study is kept in --storage (SQLite in --out by default), so running
the same command again continues an interrupted search; give several processes the same --storage URL to search
together. --out receives best.yaml (train it again with `slimtune train --config OUT/best.yaml --out RUN`),
best/ (the best trial's adapter), report.json and report.html.

examples:
  slimtune tune --task classify --method lora --train data/sst2/train_8k.tsv.gz --dev data/sst2/dev_1k.tsv.gz \\
      --trials 20 --out tune/sst2-lora
  slimtune tune --method all --train train.tsv --timeout 3600 --out tune/any
  slimtune tune ... --storage postgresql://user@db/optuna --study-name sst2   # on each machine
"""


def register(sub) -> None:
    p = sub.add_parser("tune", help="search hyperparameters with Optuna", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="classify", help="task: classify, ner or causal-lm")
    p.add_argument("--method", required=True, help="PEFT method to tune, or `all` to search across methods")
    p.add_argument("--train", required=True, metavar="PATH", help="training data")
    p.add_argument("--dev", metavar="PATH", help="validation data; default: a seeded 10%% split of train")
    p.add_argument("--model", metavar="ID|PATH", help="Hugging Face id or local directory (default: bundled MiniLM)")
    p.add_argument("--out", required=True, metavar="DIR", help="study directory (created, or continued)")
    p.add_argument("--trials", type=int, default=20, help="trials in the study, finished or pruned, in all")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: sqlite in --out)")
    p.add_argument("--study-name", default="slimtune", help="study name inside the storage")
    p.add_argument("--seed", type=int, default=42, help="seeds the sampler and every trial's training")
    p.add_argument("--max-epochs", type=int, default=3, help="largest epoch count searched")
    p.add_argument("--evals-per-epoch", type=int, default=2, help="dev scores per epoch, for pruning")
    add_config_flag(p)
    add_reader_flags(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from slimtune.errors import SlimtuneError

    try:
        import optuna  # noqa: F401  (an optional extra)
    except ImportError:
        raise SlimtuneError("slimtune tune needs Optuna: pip install 'slimtune[tune]'") from None
    from slimtune.methods.registry import available_methods
    from slimtune.tasks import get_task
    from slimtune.tuning.study import TuneRequest, tune

    task = get_task(args.task)
    if args.method == "all":
        methods = []
        for name, cls in available_methods().items():
            try:
                task.check_method(cls())
                methods.append(name)
            except SlimtuneError:
                continue
    else:
        methods = [args.method]
    request = TuneRequest(
        task=args.task, methods=methods, train_path=args.train, dev_path=args.dev, model=args.model,
        out_dir=args.out, trials=args.trials, timeout=args.timeout, storage=args.storage,
        study_name=args.study_name, seed=args.seed, max_epochs=args.max_epochs,
        evals_per_epoch=args.evals_per_epoch,
        read_options={k: v for k, v in reader_options(args).items() if v is not None})
    report = tune(request)
    best = report["best"]
    print(f"best: trial {best['trial']} of {report['trials_finished']} ({report['pruned']} pruned), "
          f"{report['metric']} {best['value']:.4f}; {args.out}/best.yaml, {args.out}/best/, {args.out}/report.html")
    return 0
