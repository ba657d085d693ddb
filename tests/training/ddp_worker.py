"""One rank of the runs test_distributed.py starts with torchrun: `python -m torch.distributed.run ... ddp_worker.py SPEC`.

SPEC (JSON) lists training cases; each is trained with `train()` as every rank
does under `slimtune train`. A case with `interrupt_at` is stopped at that step
on every rank and resumed. Then rank 1 perturbs a frozen and a trainable weight
before DDP wraps the model, and the values every rank then holds are written to
`broadcast.json`: DDP must send the trainable one and leave the frozen one alone.
Last, each rank runs the command line `cli` as `torchrun -m slimtune train` would
(its end leaves the process group). One launch for all: start-up is the slow part.
"""

import json
import sys
from pathlib import Path

import torch

from slimtune.cli import main as cli_main
from slimtune.runs.train import TrainRequest, train
from slimtune.training import distributed
from slimtune.training.config import TrainConfig
from tests.conftest import Interrupt, build_classifier, interrupt_at


def request(case: dict, resume: bool = False) -> TrainRequest:
    return TrainRequest(task=case["task"], method=case["method"], train_path=case["train"], dev_path=case["dev"],
                        out_dir=case["out"], model=case["model"], options=case["options"], resume=resume,
                        overwrite=True, config=TrainConfig(**case["config"]),
                        few_shot="off")  # trainer mechanics on toy data: the standard recipe


def run_case(case: dict) -> None:
    if "interrupt_at" not in case:
        train(request(case))
        return

    try:
        train(request(case), step_callbacks=[interrupt_at(case["interrupt_at"])])
    except Interrupt:
        pass
    train(request(case, resume=True))


def report_broadcast(model_dir: str, out: Path) -> None:
    ranks = distributed.from_environment()
    model, _, _, _ = build_classifier(model_dir, "lora")
    frozen, trainable = model.backbone.embeddings.word_embeddings.weight, model.head[1].weight
    if ranks.rank == 1:
        with torch.no_grad():
            frozen.add_(1.0)
            trainable.add_(1.0)
    ranks.wrap(model)
    held = ranks.all_objects({"frozen": frozen.sum().item(), "trainable": trainable.sum().item()})
    if ranks.is_main:
        (out / "broadcast.json").write_text(json.dumps(held))


def main(spec_path: str) -> int:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    for case in spec["cases"]:
        run_case(case)
    report_broadcast(spec["model"], Path(spec_path).parent)
    return cli_main(spec["cli"])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
