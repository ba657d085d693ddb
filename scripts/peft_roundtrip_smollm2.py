"""Export a slimtune causal-lm run (e.g. SmolLM2-135M LoRA) as a PEFT adapter, load it with plain transformers +
peft, and check that greedy answers equal slimtune's own, prompt by prompt.

    python scripts/peft_roundtrip_smollm2.py runs/smol-sst2 --out peft/smol-sst2 \\
        --data data/sst2_instruct/heldout_500.jsonl.gz --prompts 20 --max-new-tokens 16

Prints one line per prompt (same/DIFFERENT, both answers), the largest logit difference on the first prompt,
and a summary; exits 1 when any answer differs. Needs `pip install peft`. Runs offline: the base is the
exported `base_model_name_or_path` (for `smollm2-135m`, slimtune's converted fp32 copy under $SLIMTUNE_CACHE).
"""

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import torch


def read_prompts(path: str, limit: int) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    prompts = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prompt = row.get("prompt") or next(m["content"] for m in row["messages"] if m["role"] == "user")
            prompts.append(prompt)
            if len(prompts) == limit:
                break
    return prompts


def roundtrip(run_dir: str, out: Path, prompts: list[str], max_new_tokens: int) -> list[tuple[str, str, str]]:
    """(prompt, slimtune's answer, transformers + peft's answer) for each prompt, greedy, one prompt at a time."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slimtune.runs.adapter_files import load_adapter
    from slimtune.runs.formats.peft_export import export_peft
    from slimtune.tasks.generation import GenerationOptions, chat_prompt_ids, generate_ids

    export_peft(run_dir, out)
    config = json.loads((out / "adapter_config.json").read_text())
    loaded = load_adapter(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(config["base_model_name_or_path"])
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    eos = base.generation_config.eos_token_id if base.generation_config.eos_token_id is not None \
        else tokenizer.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    rows = []
    for i, prompt in enumerate(prompts):
        ids = chat_prompt_ids(loaded.backbone.tokenizer, prompt)
        ours = generate_ids(loaded.model, [ids], options)[0]
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                       eos_token_id=eos)[0, len(ids):].tolist()
            if i == 0:
                ours_logits = loaded.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))[0]
                theirs_logits = model(input_ids=input_ids).logits[0, -len(ours_logits):]  # past any prompt vectors
                print(f"first prompt: max |logit difference| {(theirs_logits - ours_logits).abs().max():.2e}")
        theirs = generated[:next((j for j, t in enumerate(generated) if t in stops), len(generated))]
        rows.append((prompt, tokenizer.decode(ours, skip_special_tokens=True),
                     tokenizer.decode(theirs, skip_special_tokens=True)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a slimtune causal-lm run directory")
    parser.add_argument("--out", help="where to export (default: a temporary directory)")
    parser.add_argument("--data", default="data/sst2_instruct/heldout_500.jsonl.gz", help="JSONL prompts")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="peft-roundtrip-")) / "adapter"
    rows = roundtrip(args.run, out, read_prompts(args.data, args.prompts), args.max_new_tokens)
    same = 0
    for prompt, ours, theirs in rows:
        same += ours == theirs
        print(f"{'same' if ours == theirs else 'DIFFERENT':<9} slimtune {ours!r:<30} peft {theirs!r:<30} "
              f"{prompt[-60:]!r}")
    print(f"{same}/{len(rows)} greedy answers equal; adapter in {out}")
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
