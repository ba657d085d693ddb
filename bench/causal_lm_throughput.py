"""Causal-LM LoRA training throughput on SmolLM2-135M: slimtune (one example a row, and packed) against
transformers + peft with its usual recipe, measured in one run.

All three train LoRA r=8, alpha 16, no dropout, on the seven attention and MLP projections of every block, with the
same examples, batch size, learning rate and one epoch; the loss covers the response tokens only. The peer:
AutoModelForCausalLM + peft.get_peft_model + transformers.Trainer with length-grouped batches and
DataCollatorForSeq2Seq padding (labels -100 on the prompt). tokens/s counts real (unpadded) tokens trained on.
The systems run one after another in this process; run the whole bench twice to see the spread.

    PYTHONPATH=src python bench/causal_lm_throughput.py --examples 64 --batch-size 8 --pack 512
"""

import argparse
import gzip
import json
import os
import tempfile
import time

import torch

from slimtune.models.loading import resolve_model_path
from slimtune.runs.train import TrainRequest, train
from slimtune.training.config import TrainConfig

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def first_rows(path: str, n: int) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def run_slimtune(args, data: str, pack: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(epochs=1, batch_size=args.batch_size if not pack else args.pack_rows, lr=args.lr,
                             patience=0, seed=args.seed, pack=pack)
        summary = train(TrainRequest(task="causal-lm", method="lora", model=args.model, train_path=data,
                                     dev_path=data, out_dir=out, config=config, few_shot="off",
                                     options={"r": "8", "alpha": "16"}))
    return {"tokens_per_second": summary["tokens_per_second"], "seconds": summary["train_seconds"],
            "steps": summary["steps"]}


def run_peft(args, rows: list[dict]) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    features = []
    for row in rows:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                               add_generation_prompt=True)
        answer = row["response"] + tokenizer.eos_token
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        features.append({"input_ids": prompt_ids + answer_ids, "attention_mask": [1] * (len(prompt_ids) + len(answer_ids)),
                         "labels": [-100] * len(prompt_ids) + answer_ids})
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    total_steps = -(-len(features) // args.batch_size)
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, learning_rate=args.lr, num_train_epochs=1,
            lr_scheduler_type="linear", warmup_steps=int(0.06 * total_steps), weight_decay=0.01, eval_strategy="no", save_strategy="no",
            logging_strategy="no", report_to=[], seed=args.seed, disable_tqdm=True, use_cpu=True,
            dataloader_num_workers=0, train_sampling_strategy="group_by_length")
        trainer = Trainer(model=model, args=training_args, train_dataset=features,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    tokens = sum(len(f["input_ids"]) for f in features)
    return {"tokens_per_second": tokens / seconds, "seconds": seconds, "steps": trainer.state.global_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="data/sst2_instruct/train_1k.jsonl.gz")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pack", type=int, default=512, help="tokens per packed row")
    parser.add_argument("--pack-rows", type=int, default=2, help="packed rows per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = first_rows(args.data, args.examples)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "train.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model}, {len(rows)} examples, "
              f"LoRA r=8 on {','.join(TARGETS)}, lr {args.lr:g}, 1 epoch", flush=True)
        results = {"slimtune": run_slimtune(args, data, 0),
                   f"slimtune --pack {args.pack} ({args.pack_rows} rows a batch)": run_slimtune(args, data, args.pack),
                   "transformers + peft, length-grouped": run_peft(args, rows)}
    print("| trainer | tokens/s | train s | steps |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_second']:.1f} | {r['seconds']:.1f} | {r['steps']} |")
    peer = results["transformers + peft, length-grouped"]["tokens_per_second"]
    for name, r in list(results.items())[:2]:
        print(f"speed ratio {name} / transformers + peft: {r['tokens_per_second'] / peer:.2f}x")


if __name__ == "__main__":
    main()
