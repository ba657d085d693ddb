"""Data-parallel training on several processes with torch.distributed, as launched by torchrun.

torchrun starts one process per rank and tells each where it stands through
RANK, WORLD_SIZE and LOCAL_RANK; `from_environment()` joins the process group
(nccl when GPUs are present, each rank on GPU LOCAL_RANK; gloo on CPUs). What
the trainer asks of it, and why results match a one-process run:

- `--batch-size` is the global batch. Every rank builds the same length-grouped
  global batches and takes every W-th row of each (rows come sorted by length, so
  the shares pad alike): the run sees the same sequence of global batches.
- DistributedDataParallel averages gradients over the W ranks. A rank scales its
  share's mean loss by W · units(share) / units(batch), units being what the task
  loss averages over (examples, or labelled tokens for ner), so the average is the
  gradient of the global batch's mean loss even when shares are uneven.
- Only parameters that require a gradient are synchronised: frozen base weights
  take no part in DDP, not even its start-up broadcast, since every rank loads
  them from the same checkpoint.
- Evaluation: each rank runs every W-th dev row; the outputs are gathered and
  every rank scores the whole set, so metrics and early stopping agree.
- Only rank 0 writes logs, checkpoints and the adapter.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from slimtune.errors import SlimtuneError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: rank of world_size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if self.active and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def share(self, indices: list[int]) -> list[int]:
        """This rank's rows of a global batch: every W-th, starting at its rank (may be empty)."""
        return indices[self.rank :: self.world_size]

    def loss_scale(self, share_units: int, batch_units: int) -> float:
        """Factor on the share's mean loss that makes DDP's gradient average the global batch's mean."""
        return self.world_size * share_units / batch_units

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as it trains: in DDP over its trainable parameters when several ranks run."""
        if not self.active:
            return model
        frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
        device_ids = [self.local_rank] if self.device.type == "cuda" else None
        # DDP broadcasts rank 0's trainable parameters and buffers once (so data-dependent set-up such as
        # subnetwork's fisher mask is the same everywhere); no buffer changes in training, so none after.
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)

    def sum(self, value: float) -> float:
        if not self.active:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.item()

    def all_objects(self, value) -> list:
        """`value` from every rank, in rank order."""
        if not self.active:
            return [value]
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def gather_shares(self, outputs: list, total: int) -> list:
        """Per-row outputs of each rank's `share(range(total))`, put back in row order on every rank."""
        if not self.active:
            return outputs
        merged = [None] * total
        for rank, part in enumerate(self.all_objects(outputs)):
            merged[rank :: self.world_size] = part
        return merged

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def from_environment() -> Ranks:
    """This process's Ranks, joining the process group when torchrun started several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise SlimtuneError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                                    "start at most that many processes per node")
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(rank, world_size, local_rank)


def shutdown() -> None:
    """Wait for every rank (rank 0 may still be writing), then leave the process group."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
