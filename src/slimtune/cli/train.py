"""`slimtune train`: fine-tune a model with one PEFT method and save the adapter."""

import argparse
import os
import sys

from slimtune.cli.common import (BASE_INT8_HELP, add_int8_flags, add_reader_flags, add_threads_flag, parse_set,
                                 reader_options)
from slimtune.cli.run_config import add_config_flag, resolved_flags
from slimtune.errors import SlimtuneError
from slimtune.training.loggers import LOGGERS

DEFAULT_BATCH_SIZE = 32

HELP = """Fine-tune a pretrained model on labelled data with one method.

Only the method's parameters and the task head are trained; the run directory
receives adapter.safetensors, adapter_config.json, metrics.json and a
metrics.jsonl log. Per-method defaults (learning rate, LoRA rank and targets)
were chosen from measurements; see `slimtune methods`.

examples:
  slimtune train --task classify --method lora --train train.tsv --out runs/lora
  slimtune train --task classify --method lora --train eight_per_class.tsv --few-shot contrastive --out runs/fs
  slimtune train --task classify --method lora --train train.csv --dev dev.csv \\
      --set r=16 --set targets=query,key,value --epochs 2 --out runs/lora16
  slimtune train --task ner --method lora --train train.conll --dev valid.conll --out runs/ner
  slimtune train ... --checkpoint-every 100 --out runs/x     # then, after an interruption:
  slimtune train ... --checkpoint-every 100 --out runs/x --resume
  slimtune train ... --nproc 2 --out runs/x     # data-parallel on 2 local processes
  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint host0:29500 \\
      --rdzv-id job1 -m slimtune train ...   # the same on each of 2 machines (see the README)
  slimtune train --task causal-lm --model smollm2-135m --method lora --train chats.jsonl --out runs/chat
  slimtune train --task causal-lm --model smollm2-135m --method lora --base-int8 int8 --train chats.jsonl --out runs/q
  slimtune train --task multi --method lora --tasks sst2=classify:sst2.tsv \\
      --tasks conll=ner:train.conll:valid.conll --loss-weights learned --out runs/mt
"""


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model with a PEFT method", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="classify",
                   help="task: classify (default), multilabel (labels \"a|b\" or a JSONL list), ner (CoNLL files), "
                        "causal-lm (JSONL instructions or chats), "
                        "or multi (several --tasks)")
    p.add_argument("--method", default="lora", help="PEFT method (see `slimtune methods`)")
    p.add_argument("--train", metavar="PATH", help="training data (.tsv, .csv, .jsonl; CoNLL for ner; .gz ok)")
    p.add_argument("--dev", metavar="PATH", help="validation data; default: a seeded 10%% split of train")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    p.add_argument("--model", metavar="ID|PATH", help="Hugging Face id or local directory (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option, repeatable (e.g. r=16)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training data (the contrastive few-shot "
                   "recipe: --pair-epochs)")
    p.add_argument("--max-train-examples", type=int, metavar="N", help="train on a seeded sample of N rows")
    p.add_argument("--batch-size", type=int, help=f"examples per step, over all processes together (default: "
                   f"{DEFAULT_BATCH_SIZE}, or the method's measured one for the task: `slimtune methods`; "
                   f"the contrastive few-shot recipe: 16 pairs)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the method's)")
    p.add_argument("--seed", type=int, default=42, help="seeds data order, splits, initialisation and dropout")
    p.add_argument("--grad-accum", type=int, default=1, metavar="N", help="micro-batches per optimizer step")
    p.add_argument("--max-batch-tokens", type=int, default=1024, metavar="N",
                   help="padded tokens per forward pass: a longer batch runs in pieces with the same gradient, "
                        "bounding memory by N rather than by the batch's longest texts")
    p.add_argument("--pack", type=int, default=0, metavar="TOKENS",
                   help="causal-lm: pack several examples into each row of up to TOKENS tokens, attention kept "
                        "inside each example; --batch-size then counts rows (default 0: one example a row)")
    p.add_argument("--warmup-ratio", type=float, default=0.06, help="share of the steps spent warming up the lr")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay of weight matrices")
    p.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this")
    p.add_argument("--eval-every", type=int, default=0, metavar="STEPS", help="also evaluate every N steps")
    p.add_argument("--patience", type=int, default=3, help="evaluations without gain before stopping (0: off)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS", help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue the interrupted (or finished) run of --out, with the same settings")
    p.add_argument("--init-adapter", metavar="DIR", help="start from this adapter's weights (a slimtune run or a "
                   "peft adapter directory); it fixes the method options, labels and base")
    p.add_argument("--nproc", type=int, metavar="N", help="train data-parallel on N processes of this machine "
                   "(started by torchrun's launcher; one per GPU when there are GPUs)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous slimtune run in --out (never anything else)")
    p.add_argument("--max-length", type=int,
                   help="token limit per text (default: the model's window); causal-lm drops longer examples")
    add_int8_flags(p, base_help=BASE_INT8_HELP + "; the method trains in fp32", quantize_dest="base_int8",
                   quantize_use="--base-int8")
    p.add_argument("--pooling", choices=("mean", "cls", "pooler"), help="sentence pooling (default: the checkpoint's)")
    p.add_argument("--log", action="append", choices=LOGGERS, default=[],
                   help="also log to: tensorboard (event files in RUN/tensorboard) or mlflow (the tracking store MLflow is "
                        "configured for: MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME), repeatable")
    add_config_flag(p)
    p.add_argument("--few-shot", choices=("auto", "contrastive", "supervised", "off"), default="auto",
                   help="small data (< 500 training rows, no dev carved from them): auto (default) trains classify "
                        "with a method that adapts the encoder contrastively on sentence pairs, then fits the head "
                        "(SetFit's recipe), up to 64 rows per class, and otherwise with the supervised small-data "
                        "recipe (≥ 200 steps, a batch that fits, the head started from a logistic regression), which "
                        "--augment, --adversarial, --checkpoint-every, --eval-every and --grad-accum also pick; both "
                        "take the method's small-data defaults (`slimtune methods`; LoRA: query/value on classify); "
                        "contrastive or supervised force one; off: the standard recipe, flags as given")
    add_pair_flags(p)
    add_reader_flags(p)
    add_remedy_flags(p)
    add_multitask_flags(p)
    add_threads_flag(p)
    p.set_defaults(handler=run)


def add_pair_flags(p) -> None:
    g = p.add_argument_group("the contrastive few-shot recipe (--few-shot contrastive, or auto's pick)")
    g.add_argument("--pairs-per-row", type=int, metavar="N",
                   help="sentence pairs drawn per training row and pass, half same-class, half different-class "
                        "(default: 20; measured against 10 and 40)")
    g.add_argument("--pair-epochs", type=int, metavar="N",
                   help="passes over freshly drawn pairs (default: 1, as SetFit's); more pairs or passes lower "
                        "the pair phase's lr (× √(20/steps)) unless --lr is given")


def add_remedy_flags(p) -> None:
    g = p.add_argument_group("regularisation for small data")
    g.add_argument("--adversarial", choices=("fgm", "pgd"),
                   help="also train on input embeddings moved along the loss gradient: fgm (one step of norm "
                        "--adv-epsilon) or pgd (--adv-steps steps inside that ball); classify, ner")
    g.add_argument("--adv-epsilon", type=float, default=0.1, metavar="EPS",
                   help="L2 norm of each example's embedding perturbation over all its tokens (measured on "
                        "MiniLM, whose word embeddings have norm ~1: 0.1 helps a little, 0.3 and 1.0 stall training)")
    g.add_argument("--adv-steps", type=int, default=3, metavar="K", help="PGD's ascent steps (default 3)")
    g.add_argument("--augment", choices=("eda",),
                   help="eda: each epoch, each training text is kept or rewritten by one of synonym replacement, "
                        "random insertion, swap or deletion (synonyms: nearest whole words in the model's input "
                        "embeddings); dev and test are never augmented; classify")
    g.add_argument("--augment-rate", type=float, default=0.1, metavar="RATE",
                   help="share of a text's words an EDA operation changes (default 0.1)")


def add_multitask_flags(p) -> None:
    g = p.add_argument_group("multi-task (--task multi)")
    g.add_argument("--tasks", action="append", metavar="NAME=TYPE:TRAIN[:DEV]",
                   help="a task of the mix, repeatable: its name, type (classify, ner), training file and optional "
                        "dev file (default: a seeded 10%% split of its training file)")
    g.add_argument("--sharing", choices=("shared", "per-task"), default="shared",
                   help="one adapter for all tasks (default), or one per task over the same frozen base")
    g.add_argument("--task-sampling", choices=("proportional", "temperature"), default="proportional",
                   help="batches drawn from task i with p ∝ n_i (default), or p ∝ n_i^(1/T)")
    g.add_argument("--temperature", type=float, default=2.0, metavar="T", help="T of temperature sampling")
    g.add_argument("--loss-weights", choices=("learned", "fixed"), default="learned",
                   help="learned: exp(-s_i)·L_i + s_i with trainable s_i (default); fixed: w_i·L_i")
    g.add_argument("--loss-weights-lr", type=float, default=0.05, metavar="LR",
                   help="peak learning rate of the learned s_i (default 0.05; Adam moves each ~LR per step)")
    g.add_argument("--weights", metavar="NAME=W,...", help="fixed weights (default 1 for every task)")


def without_nproc(argv: list[str]) -> list[str]:
    """The command line less `--nproc N` (also `--nproc=N` or an abbreviation argparse accepted)."""
    out, skip_value = [], False
    for token in argv:
        if skip_value:
            skip_value = False
            continue
        name = token.split("=", 1)[0]
        if len(name) > 2 and "--nproc".startswith(name):
            skip_value = "=" not in token
            continue
        out.append(token)
    return out


def launch(args) -> int:
    """Run `args.nproc` ranks of this same command under torchrun's launcher, each with its part of the CPU cores."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // args.nproc)))
    # what `torchrun --standalone --nproc-per-node N` sets up: one node, rendezvous on a free local port
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # a failure is reported below
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "slimtune", *without_nproc(args.argv))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        raise SlimtuneError(f"rank {rank} of {args.nproc} failed first (exit status {failure.exitcode}); "
                            "see its message above") from None
    return 0


def pair_settings(args):
    """The contrastive recipe's settings: its defaults, with the pair flags given."""
    from slimtune.training.contrastive import ContrastiveConfig

    given = {"pairs_per_row": args.pairs_per_row, "epochs": args.pair_epochs}
    return ContrastiveConfig(**{field: value for field, value in given.items() if value is not None})


def should_launch(args) -> bool:
    """Whether `--nproc` asks this process to start the ranks (not already one of them)."""
    if args.nproc is None:
        return False
    if args.nproc < 1:
        raise SlimtuneError("--nproc must be at least 1")
    if args.batch_size < args.nproc:
        raise SlimtuneError(f"--batch-size {args.batch_size} is the global batch; it cannot feed {args.nproc} processes")
    if "LOCAL_WORLD_SIZE" in os.environ:  # set by torchrun in every rank
        raise SlimtuneError("--nproc starts torchrun itself; under torchrun use its --nproc-per-node instead")
    return args.nproc > 1


def run(args) -> int:
    from slimtune.runs.train import TrainRequest, describe, train
    from slimtune.tasks import get_task
    from slimtune.tasks.multitask.files import MULTI
    from slimtune.training import distributed
    from slimtune.training.config import TrainConfig

    if args.batch_size is None:  # the method's measured batch size for the task, else the general default
        from slimtune.methods.registry import get_method_class

        args.batch_size = get_method_class(args.method).batch_size_for(args.task, DEFAULT_BATCH_SIZE)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio, grad_clip=args.grad_clip, grad_accum=args.grad_accum,
        max_batch_tokens=args.max_batch_tokens, eval_every=args.eval_every, patience=args.patience,
        checkpoint_every=args.checkpoint_every, seed=args.seed,
        log_to=tuple(dict.fromkeys(args.log)), adversarial=args.adversarial, adv_epsilon=args.adv_epsilon,
        adv_steps=args.adv_steps, augment=args.augment, augment_rate=args.augment_rate, pack=args.pack,
    )
    config.validate()
    if args.task == MULTI:
        return run_multitask(args, config)
    if args.tasks:
        raise SlimtuneError("--tasks needs --task multi")
    if not args.train:
        raise SlimtuneError("--train PATH is required")
    if should_launch(args):
        return launch(args)
    request = TrainRequest(
        task=args.task, method=args.method, train_path=args.train, out_dir=args.out, dev_path=args.dev,
        model=args.model, options=parse_set(args.set), max_train_examples=args.max_train_examples,
        max_length=args.max_length, pooling=args.pooling, read_options=reader_options(args), resume=args.resume,
        overwrite=args.overwrite, base_int8=args.base_int8, config=config, flags=resolved_flags(args),
        init_adapter=args.init_adapter, few_shot=args.few_shot, contrastive=pair_settings(args),
    )
    summary = train(request)
    distributed.shutdown()  # on failure a rank just exits, and torchrun stops the others
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports
    print(describe(summary, get_task(args.task).primary_metric))
    print(f"adapter written to {args.out}", file=sys.stderr)
    return 0


def run_multitask(args, config) -> int:
    from slimtune.runs.multitask import MultiTrainRequest, describe, train_multitask
    from slimtune.tasks.multitask.specs import parse_task_specs, parse_weights

    given = [flag for flag, value in (("--adversarial", args.adversarial), ("--augment", args.augment),
                                      ("--train", args.train), ("--dev", args.dev), ("--text-col", args.text_col),
                                      ("--label-col", args.label_col), ("--scheme", args.scheme),
                                      ("--init-adapter", args.init_adapter),
                                      ("--few-shot", args.few_shot != "auto"),
                                      ("--pairs-per-row", args.pairs_per_row is not None),
                                      ("--pair-epochs", args.pair_epochs is not None)) if value]
    if given:
        files = {"--train", "--dev", "--text-col", "--label-col", "--scheme"} & set(given)
        raise SlimtuneError(f"{', '.join(given)} does not apply to --task multi"
                            + ("; give each task's files in --tasks" if files else ""))
    if args.nproc not in (None, 1):
        raise SlimtuneError("--task multi does not support --nproc yet; train it on one process")
    if args.weights and args.loss_weights != "fixed":
        raise SlimtuneError("--weights needs --loss-weights fixed")
    specs = parse_task_specs(args.tasks)
    request = MultiTrainRequest(
        tasks=specs, method=args.method, out_dir=args.out, model=args.model, options=parse_set(args.set),
        sharing=args.sharing, sampling=args.task_sampling, temperature=args.temperature,
        loss_weights=args.loss_weights, loss_weights_lr=args.loss_weights_lr,
        fixed_weights=parse_weights(args.weights, [spec.name for spec in specs]),
        max_train_examples=args.max_train_examples, max_length=args.max_length, pooling=args.pooling,
        base_int8=args.base_int8, resume=args.resume, overwrite=args.overwrite, config=config,
    )
    print(describe(train_multitask(request)))
    print(f"adapter written to {args.out}", file=sys.stderr)
    return 0
