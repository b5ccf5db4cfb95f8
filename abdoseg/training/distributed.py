"""Data-parallel training under torchrun: the one place that knows about torch.distributed.

    torchrun --nproc-per-node N -m abdoseg train ...          # one machine, N processes (GPUs, or CPU: gloo)
    torchrun --nnodes M --node-rank K --master-addr HOST --nproc-per-node N -m abdoseg train ...

`init` joins the process group that torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT): nccl on GPUs, one GPU per local rank; gloo on the CPU. Without torchrun it is a world of one
and every helper here is a no-op, so the single-process path runs the same code.

What makes N ranks compute what one process would on the same global batch:
- each rank builds its own slice of the global batch (`batch_slice`; the crops are drawn per global index);
- batch norm uses the statistics of the global batch (`wrap`: torch's SyncBatchNorm on GPUs; on the CPU,
  where it is not implemented, `GlobalBatchNorm3d`, the same two-pass statistics through differentiable
  all-reduces);
- the loss sees the whole global batch (`global_batch_loss` all-gathers logits and targets, differentiably):
  its Dice is the batch Dice, not a mean of per-rank Dice;
- DDP averages the gradients; rank 0 alone writes checkpoints, logs and curves; validation scans are split
  across ranks and their results gathered (`gather`).
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init(device: str) -> Context:
    """Join the torchrun job described by the environment (a world of one without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Context(rank, world, local_rank, device)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def batch_slice(global_batch: int, ctx: Context) -> range:
    """The global batch indices this rank builds (contiguous, equal shares)."""
    if global_batch % ctx.world:
        raise ValueError(f"batch size {global_batch} must be a multiple of the {ctx.world} processes")
    share = global_batch // ctx.world
    return range(ctx.rank * share, (ctx.rank + 1) * share)


@contextmanager
def main_first(ctx: Context) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills a cache), then the others."""
    if ctx.distributed and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.distributed and ctx.is_main:
        dist.barrier()


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank if `flag` is true on any (e.g. a time budget), so all ranks stop together."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([float(flag)], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(items: list, ctx: Context) -> list:
    """Every rank's `items`, concatenated in rank order, on every rank."""
    if not ctx.distributed:
        return list(items)
    parts: list = [None] * ctx.world
    dist.all_gather_object(parts, list(items))
    return [x for p in parts for x in p]


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (its gradient is the sum of the ranks' gradients)."""
    import torch.distributed.nn.functional as dnn

    with warnings.catch_warnings():  # deprecated for private functional collectives; public and working in 2.13
        warnings.simplefilter("ignore", FutureWarning)
        return dnn.all_reduce(t)


def _all_gather(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Differentiable all-gather (each rank's chunk gets the sum of the ranks' gradients for it)."""
    import torch.distributed.nn.functional as dnn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return dnn.all_gather(t.contiguous())


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d over the global batch of all ranks, on any device (torch's SyncBatchNorm needs a GPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3, 4)
        n = _all_reduce(torch.tensor([float(x.numel() // x.shape[1])], device=x.device))
        mean = _all_reduce(x.sum(dims)) / n
        centred = x - mean[None, :, None, None, None]
        var = _all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp(min=1), alpha=m)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        out = centred * scale[None, :, None, None, None]
        return out + self.bias[None, :, None, None, None] if self.affine else out


def _to_global_batch_norm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm3d for a GlobalBatchNorm3d with the same parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm3d:
            new = GlobalBatchNorm3d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(child.weight.device)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _to_global_batch_norm(child)
    return module


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """The module that training steps call: `model` itself alone, else DDP over `model` with global batch norm
    (`model`'s own modules are converted in place, so its state_dict keeps its keys)."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.startswith("cuda"):  # converts the children in place (the root is no batch norm)
        return DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model), device_ids=[ctx.local_rank])
    return DistributedDataParallel(_to_global_batch_norm(model))


def global_batch_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      ctx: Context) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`loss_fn` over the global batch: logits and targets all-gathered (the logits differentiably), so every
    rank computes the single-process loss; with DDP's gradient average the step equals the single-process one."""
    if not ctx.distributed:
        return loss_fn
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        targets = [torch.empty_like(target) for _ in range(ctx.world)]
        dist.all_gather(targets, target.contiguous())
        return loss_fn(torch.cat(_all_gather(logits)), torch.cat(targets))

    return loss
