"""NER LoRA training throughput: slimtune against transformers + peft token classification, in one run.

Both train the bundled all-MiniLM-L6-v2 on the same CoNLL-2003 sentences (a seeded sample of `--train-examples`,
slimtune's own sampling) for one epoch with LoRA as slimtune's ner default sets it: rank 8, alpha 16, every linear
layer of the blocks (query, key, value and the three dense projections), batches of 16, lr 2e-3, and are scored
by seqeval entity F1 on the first `--dev-examples` sentences of the validation file. The peer follows the usual
recipe: AutoModelForTokenClassification, words tokenized with `is_split_into_words=True` and each word's tag on
its first piece (-100 on the rest), peft.get_peft_model (task_type TOKEN_CLS, so the head is trained too),
DataCollatorForTokenClassification and transformers.Trainer with length-grouped batches
(train_sampling_strategy "group_by_length", as slimtune batches). examples/s counts training steps only.

    PYTHONPATH=src python bench/ner_throughput.py                        # 1,000 sentences, 1 thread
    PYTHONPATH=src python bench/ner_throughput.py --train-examples 2000
"""

import argparse
import os
import random
import tempfile
import time

import torch

from slimtune.data.conll import read_conll
from slimtune.methods.lora import ALL_BLOCK_LINEARS
from slimtune.models.loading import resolve_model_path
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig

BLOCK_LINEARS = ["query", "key", "value", "dense"]  # BERT's linear layers inside the blocks, by name


def write_conll(sentences, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            f.write("".join(f"{w} {t}\n" for w, t in zip(s.words, s.tags)) + "\n")


def run_slimtune(args, dev_path: str, out_dir: str) -> dict:
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=args.lr, patience=0, seed=args.seed)
    summary = train(TrainRequest(
        task="ner", method="lora", train_path=args.train, dev_path=dev_path, out_dir=out_dir,
        max_train_examples=args.train_examples, config=config, few_shot="off",
        options={"r": str(args.r), "alpha": str(args.alpha), "targets": ALL_BLOCK_LINEARS}))
    return {"examples_per_second": summary["examples_per_second"], "seconds": summary["train_seconds"],
            "f1": summary["best_dev_f1"], "trainable": summary["trainable_parameters"]}


def sample(sentences, count: int, seed: int):
    """The sentences slimtune's --max-train-examples keeps (runs/prepare.py, read_split)."""
    if count and len(sentences) > count:
        keep = sorted(random.Random(seed).sample(range(len(sentences)), count))
        sentences = [sentences[i] for i in keep]
    return sentences


def run_peft(args, dev, out_dir: str) -> dict:
    import numpy as np
    from peft import LoraConfig, get_peft_model
    from seqeval.metrics import f1_score
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    path = resolve_model_path(None)
    rows = sample(read_conll(args.train), args.train_examples, args.seed)
    tags = sorted({t for s in rows + dev for t in s.tags})
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(sentences):
        enc = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True, max_length=256)
        features = []
        for i, s in enumerate(sentences):
            previous, labels = None, []
            for word in enc.word_ids(i):
                labels.append(-100 if word is None or word == previous else tags.index(s.tags[word]))
                previous = word
            features.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                             "labels": labels})
        return features

    torch.manual_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(tags))
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0,
                                             target_modules=BLOCK_LINEARS, task_type="TOKEN_CLS"))
    total_steps = -(-len(rows) // args.batch_size)
    training_args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, num_train_epochs=1, warmup_steps=int(0.06 * total_steps), weight_decay=0.01,
        lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to=[], seed=args.seed, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(rows),
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predictions = trainer.predict(encode(dev))
    predicted, gold = np.argmax(predictions.predictions, -1), predictions.label_ids
    keep = [[(tags[p], tags[g]) for p, g in zip(row_p, row_g) if g != -100] for row_p, row_g in zip(predicted, gold)]
    f1 = f1_score([[g for _, g in row] for row in keep], [[p for p, _ in row] for row in keep])
    return {"examples_per_second": len(rows) / seconds, "seconds": seconds, "f1": f1,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/conll2003/train.txt.gz")
    parser.add_argument("--dev", default="data/conll2003/valid.txt.gz")
    parser.add_argument("--train-examples", type=int, default=1000)
    parser.add_argument("--dev-examples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); LoRA r={args.r} on every block linear, "
          f"lr {args.lr:g}, batch {args.batch_size}, {args.train_examples} CoNLL sentences x 1 epoch")
    dev = read_conll(args.dev)[: args.dev_examples]
    with tempfile.TemporaryDirectory() as tmp:
        dev_path = os.path.join(tmp, "dev.conll")
        write_conll(dev, dev_path)
        ours = run_slimtune(args, dev_path, os.path.join(tmp, "ours"))
        peer = run_peft(args, dev, os.path.join(tmp, "peer"))
    print("| trainer | trainable parameters | examples/s | train s | dev entity F1 |\n|---|---|---|---|---|")
    for name, r in (("slimtune", ours), ("transformers + peft, length-grouped", peer)):
        print(f"| {name} | {r['trainable']:,} | {r['examples_per_second']:.1f} | {r['seconds']:.1f} | {r['f1']:.4f} |")
    print(f"speed ratio slimtune / peer: {ours['examples_per_second'] / peer['examples_per_second']:.2f}x")


if __name__ == "__main__":
    main()
