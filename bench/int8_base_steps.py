"""LoRA training steps on an fp32 against an int8 frozen base, interleaved in one process on the same batches.

Both models see the same load, so the step-time ratio holds on a busy machine too. One thread.

    python bench/int8_base_steps.py            # SmolLM2-135M-Instruct, 8-example batches of data/sst2_instruct
"""
import time, statistics, torch, psutil, os
torch.set_num_threads(1)
from slimtune.data.batching import pad_batch
from slimtune.methods.adaptation import attach
from slimtune.methods.registry import create_method
from slimtune.models.int8_base import quantize_frozen_linears, weight_bytes
from slimtune.tasks import get_task
task = get_task("causal-lm")
rows = task.read("data/sst2_instruct/train_1k.jsonl.gz")[:48]
models = {}
for name in ("fp32", "int8"):
    bb = task.load_backbone("smollm2-135m")
    torch.manual_seed(0)
    m = task.build_model(bb, [])
    params = attach(m, create_method("lora", {}))
    if name == "int8":
        quantize_frozen_linears(m.backbone)
    feats = task.encode(rows, bb.tokenizer, [], bb.max_length)
    models[name] = (m, params, feats, bb.tokenizer.pad_token_id)
    print(name, "model tensor bytes", weight_bytes(m))
times = {"fp32": [], "int8": []}
for step in range(6):
    for name, (m, params, feats, pad) in models.items():
        batch = pad_batch(feats[step * 8:(step + 1) * 8], pad)
        opt = torch.optim.AdamW(params, lr=1e-4)
        s = time.perf_counter()
        loss = task.loss(m(**batch), batch["labels"]); loss.backward(); opt.step(); opt.zero_grad()
        times[name].append(time.perf_counter() - s)
for name, t in times.items():
    print(name, "median s/step (batch 8, steps 2-6):", round(statistics.median(t[1:]), 2))
