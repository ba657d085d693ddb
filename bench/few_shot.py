"""Few-shot classification: slimtune's small-data recipes against the `setfit` library, measured in one run.

Same body (the bundled all-MiniLM-L6-v2), same samples, same machine, same thread count. For every task,
k examples per class and seed, each system trains on the same k·C rows (no dev set: a few-shot user has none)
and is scored on the same held-out rows, a seeded sample of the task's training file disjoint from every
training sample (never the bundled dev split, whose rows are left out of the SST-2 pool):

- slimtune-supervised: `slimtune train --method lora --few-shot supervised` (the supervised small-data recipe);
- slimtune-contrastive: `--few-shot contrastive` (what `--few-shot auto`, the default, picks for these sizes);
- setfit: `setfit.Trainer` with its defaults (CosineSimilarityLoss, oversampled pairs, 1 epoch, batch 16,
  LogisticRegression head), which fine-tunes and saves the whole encoder.

Tasks: sst2 (binary sentiment, ../shared/data/sst2/train.tsv) and entities (CoNLL-2003 entity-type
classification: the text is an entity mention, e.g. "Angela Merkel", the label its type PER/LOC/ORG/MISC;
mentions are taken from ../shared/data/conll2003/train.txt, de-duplicated case-insensitively, those seen
with two types dropped, so held-out mentions never occur in training); sentence-types (the same four types on
sentence-length texts: CoNLL sentences of at least 8 tokens whose entities are all of one type, labelled with it).

    python bench/few_shot.py --tasks sst2 --shots 8 --seeds 0 --heldout 200        # a quick check
    python bench/few_shot.py --tasks sst2 --shots 8 --seeds 100,101 --systems slimtune-contrastive \
        --score-on data/sst2/dev_1k.tsv.gz --heldout 300 --pairs-per-row 20 --lr 5e-4  # tuning the defaults
    python bench/few_shot.py --tasks sst2,entities --shots 8,16,64 --seeds 0,1,2 --json bench/few_shot.json
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("slimtune-supervised", "slimtune-contrastive", "setfit")


def shared_data(relative: str) -> str:
    """../shared/data/<relative> from the repository root (a git worktree: from the main checkout's parent)."""
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / "shared" / "data" / relative
        if path.exists():
            return str(path)
    return str(ROOT.parent / "shared" / "data" / relative)


def read_sst2(path: str, exclude: str | None = None) -> list[tuple[str, str]]:
    """SST-2 rows as (text, positive|negative), without those of `exclude` (the bundled dev split, a subset of the
    training file, on which the contrastive defaults were tuned)."""
    from slimtune.data.table import read_labelled_texts

    excluded = {r.text for r in read_labelled_texts(exclude)} if exclude else set()
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        text_at, label_at = header.index("sentence"), header.index("label")
        for line in f:
            cells = line.rstrip("\n").split("\t")
            if cells[text_at] not in excluded:
                rows.append((cells[text_at], "positive" if cells[label_at] == "1" else "negative"))
    return rows


def conll_sentences(path: str):
    """(words, tags) of every sentence of a CoNLL-2003 file, in order (document markers end a sentence)."""
    words, tags = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = line.split()
            if cells and cells[0] != "-DOCSTART-":
                words.append(cells[0])
                tags.append(cells[-1])
            elif words:
                yield words, tags
                words, tags = [], []
    if words:
        yield words, tags


def read_sentence_types(path: str, min_words: int = 8) -> list[tuple[str, str]]:
    """(sentence, type) for every distinct CoNLL-2003 sentence of at least `min_words` tokens whose entities are all of
    one type: the entity task's four classes on sentence-length texts (17.6 words on average in the training file)."""
    rows, seen = [], set()
    for words, tags in conll_sentences(path):
        kinds = {tag[2:] for tag in tags if tag != "O"}
        text = " ".join(words)
        if len(words) >= min_words and len(kinds) == 1 and text.lower() not in seen:
            seen.add(text.lower())
            rows.append((text, kinds.pop()))
    return sorted(rows)


def read_entity_mentions(path: str) -> list[tuple[str, str]]:
    """(mention, type) for every distinct mention of a CoNLL-2003 file (IOB1 or IOB2), one type each."""
    types = defaultdict(Counter)
    spelling = {}
    for words, tags in conll_sentences(path):
        current, kind = [], None
        for word, tag in [*zip(words, tags), ("", "O")]:
            inside = tag[2:] if tag != "O" else None
            if current and (inside != kind or tag.startswith("B-")):
                mention = " ".join(current)
                types[mention.lower()][kind] += 1
                spelling.setdefault(mention.lower(), mention)
                current, kind = [], None
            if inside:
                current.append(word)
                kind = inside
    return sorted((spelling[key], next(iter(seen))) for key, seen in types.items() if len(seen) == 1)


def split_samples(rows, shots: list[int], seeds: list[int], heldout: int, dev: int = 0):
    """(held-out rows, dev rows, {(k, seed): training rows}): held-out first, then `dev` rows to choose recipes on,
    training samples from the rest only (with dev=0 the samples are those of earlier runs)."""
    order = list(range(len(rows)))
    random.Random(12345).shuffle(order)
    held = [rows[i] for i in order[:heldout]]
    dev_rows = [rows[i] for i in order[heldout:heldout + dev]]
    pool = defaultdict(list)
    for i in order[heldout + dev:]:
        pool[rows[i][1]].append(rows[i])
    samples = {}
    for seed in seeds:
        for k in shots:
            rng = random.Random(f"{seed}:{k}")
            chosen = [row for label in sorted(pool) for row in rng.sample(pool[label], k)]
            rng.shuffle(chosen)
            samples[k, seed] = chosen
    return held, dev_rows, samples


def write_tsv(path: Path, rows) -> str:
    path.write_text("sentence\tlabel\n" + "".join(f"{t.replace(chr(9), ' ')}\t{l}\n" for t, l in rows))
    return str(path)


def run_slimtune(mode: str, train_path: str, held_path: str, out: Path, seed: int, args) -> dict:
    from slimtune.runs.adapter_files import load_adapter
    from slimtune.training.contrastive import ContrastiveConfig
    from slimtune.runs.train import TrainRequest, train
    from slimtune.training.config import TrainConfig

    contrastive = ContrastiveConfig(**({"pairs_per_row": args.pairs_per_row} if args.pairs_per_row else {}))
    options = dict(item.split("=", 1) for item in args.set or [])
    started = time.perf_counter()
    summary = train(TrainRequest(task="classify", method=args.method, train_path=train_path, out_dir=str(out),
                                 options=options, few_shot=mode, config=TrainConfig(seed=seed, lr=args.lr),
                                 contrastive=contrastive))
    wall = time.perf_counter() - started
    loaded = load_adapter(out)  # scored as a user would: the saved adapter, loaded back
    features = loaded.task.encode(loaded.task.read(held_path), loaded.backbone.tokenizer, loaded.labels,
                                  loaded.backbone.max_length)
    metrics = loaded.task.evaluate(loaded.model, features, loaded.backbone.tokenizer.pad_token_id, 128, loaded.labels)
    return {"accuracy": metrics["accuracy"], "train_seconds": summary["train_seconds"] + summary["prepare_seconds"],
            "wall_seconds": wall, "model_bytes": summary["adapter_bytes"], "steps": summary["steps"],
            "recipe": summary["recipe"]["name"], "head_start": summary["recipe"].get("head_start", ""),
            "lr": summary["lr"], **({"mean_tokens": summary["contrastive"]["mean_tokens"]}
                                    if "contrastive" in summary else {})}


def run_setfit(train_rows, held_rows, out: Path, seed: int, max_steps: int) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from slimtune.models.loading import resolve_model_path

    started = time.perf_counter()
    model = SetFitModel.from_pretrained(resolve_model_path(None))
    trainer = Trainer(model=model, args=TrainingArguments(seed=seed, report_to="none", show_progress_bar=False,
                                                              max_steps=max_steps,
                                                              output_dir=str(out.with_name(out.name + "-checkpoints"))),
                      train_dataset=Dataset.from_dict({"text": [t for t, _ in train_rows],
                                                       "label": [l for _, l in train_rows]}))
    trained = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - trained
    wall = time.perf_counter() - started
    predicted = model.predict([t for t, _ in held_rows], batch_size=128, use_labels=True)
    accuracy = sum(str(p) == l for p, (_, l) in zip(predicted, held_rows)) / len(held_rows)
    model.save_pretrained(str(out))  # SetFit's own format: the whole encoder plus its head
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"accuracy": accuracy, "train_seconds": train_seconds, "wall_seconds": wall, "model_bytes": size,
            "steps": trainer.state.global_step if hasattr(trainer, "state") else None, "recipe": "setfit"}


def system_label(run: dict) -> str:
    """The system's name, with the method where it is not LoRA; runs of an earlier recipe are labelled apart:
    supervised runs before the logistic head start (no `head_start` field), contrastive runs of more than 20
    pair steps before the pair phase scaled its lr (no `lr` field; at 20 steps or fewer the scale is 1), and
    contrastive runs before its lr also followed the rows' length (no `mean_tokens` field)."""
    if run["system"] == "slimtune-supervised" and "head_start" not in run:
        return "slimtune-supervised (random head, earlier recipe)"
    if run["system"] == "slimtune-contrastive" and "lr" not in run and run["steps"] > 20:
        return "slimtune-contrastive (lr 2e-3 unscaled, earlier recipe)"
    if run["system"] == "slimtune-contrastive" and "mean_tokens" not in run:
        return "slimtune-contrastive (lr by steps only, earlier recipe)"
    method = run.get("method", "lora")
    return run["system"] + (f" ({method})" if method != "lora" else "")


def table(results: list[dict]) -> str:
    """Markdown: one row per (task, k, system), mean ± std over seeds; load: the 1-minute load average at the end
    of the runs (the machine's two cores are shared)."""
    groups = defaultdict(list)
    for r in results:
        groups[r["task"], r["shots"], system_label(r)].append(r)
    lines = ["| task | k/class | system | accuracy (mean ± std) | seeds | train s (mean) | saved model | load |",
             "|---|---|---|---|---|---|---|---|"]
    for (task, k, system), runs in groups.items():
        acc = [r["accuracy"] for r in runs]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        size = statistics.mean(r["model_bytes"] for r in runs)
        shown = f"{size / 1024:.0f} KiB" if size < 2**20 else f"{size / 2**20:.1f} MiB"
        lines.append(f"| {task} | {k} | {system} | {statistics.mean(acc):.3f} ± {std:.3f} | {len(acc)} | "
                     f"{statistics.mean(r['train_seconds'] for r in runs):.1f} | {shown} | "
                     f"{statistics.mean(r['load'] for r in runs):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="sst2,entities", help="comma-separated: sst2, entities, sentence-types")
    p.add_argument("--shots", default="8,16,64", help="examples per class, comma-separated")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--heldout", type=int, default=1000, help="held-out rows per task")
    p.add_argument("--sst2", default=shared_data("sst2/train.tsv"))
    p.add_argument("--conll", default=shared_data("conll2003/train.txt"))
    p.add_argument("--threads", type=int, default=1, help="torch threads for every system")
    p.add_argument("--score-on", metavar="PATH", help="score on this TSV instead of a held-out sample (to tune "
                   "defaults on the bundled dev split, data/sst2/dev_1k.tsv.gz, never on the held-out rows)")
    p.add_argument("--dev", type=int, default=0, metavar="N",
                   help="score on N rows carved from the training pool (after the held-out rows, before any "
                   "training sample) instead of the held-out rows: to choose recipes without touching the held-out")
    p.add_argument("--pairs-per-row", type=int, help="slimtune-contrastive: pairs per training row (default: its own)")
    p.add_argument("--method", default="lora", help="slimtune: the PEFT method (default: lora)")
    p.add_argument("--lr", type=float, help="slimtune: peak learning rate (default: the method's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="slimtune: a method option, repeatable")
    p.add_argument("--setfit-max-steps", type=int, default=-1, metavar="N",
                   help="cap SetFit's pair steps (default -1: SetFit's own, all oversampled pairs)")
    p.add_argument("--json", metavar="PATH", help="append each run as one JSON line here")
    p.add_argument("--report", nargs="+", metavar="JSONL", help="only print the table of runs recorded by --json "
                   "(several files: runs of one measurement split over processes)")
    args = p.parse_args(argv)
    if args.report:
        runs = [json.loads(line) for path in args.report for line in Path(path).read_text().splitlines()]
        order = {name: i for i, name in enumerate(SYSTEMS)}
        runs.sort(key=lambda r: (r["task"], r["shots"], order.get(r["system"], 9), r["seed"]))
        print(table(runs))
        return 0
    torch.set_num_threads(args.threads)
    shots = [int(k) for k in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    systems = args.systems.split(",")
    readers = {"sst2": lambda: read_sst2(args.sst2, str(ROOT / "data" / "sst2" / "dev_1k.tsv.gz")),
               "entities": lambda: read_entity_mentions(args.conll),
               "sentence-types": lambda: read_sentence_types(args.conll)}
    unknown = sorted(set(args.tasks.split(",")) - set(readers))
    if unknown:
        p.error(f"unknown --tasks {', '.join(unknown)}; choose from {', '.join(readers)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="few-shot-") as tmp:
        tmp = Path(tmp)
        for task in args.tasks.split(","):
            held, dev, samples = split_samples(readers[task](), shots, seeds, args.heldout, args.dev)
            if args.dev:
                held = dev
            if args.score_on:
                from slimtune.data.table import read_labelled_texts

                names = {"0": "negative", "1": "positive"} if task == "sst2" else {}
                held = [(r.text, names.get(r.label, r.label)) for r in read_labelled_texts(args.score_on)]
                held = held[:args.heldout]
            held_path = write_tsv(tmp / f"{task}-heldout.tsv", held)
            for (k, seed), rows in samples.items():
                train_path = write_tsv(tmp / f"{task}-{k}-{seed}.tsv", rows)
                for system in systems:
                    out = tmp / f"{task}-{k}-{seed}-{system}"
                    if system == "setfit":
                        r = run_setfit(rows, held, out, seed, args.setfit_max_steps)
                    else:
                        r = run_slimtune(system.removeprefix("slimtune-"), train_path,
                                         held_path, out, seed, args)
                    r.update(task=task, shots=k, seed=seed, system=system, train_rows=len(rows),
                             **({"method": args.method} if system != "setfit" else {}),
                             heldout_rows=len(held), threads=args.threads,
                             scored_on="dev" if args.dev else args.score_on or "heldout", load=os.getloadavg()[0])
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(r) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
