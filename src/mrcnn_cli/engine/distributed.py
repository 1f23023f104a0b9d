"""Splitting a run over processes: `--shard K/N` for independent jobs (Slurm arrays, indexed
Kubernetes jobs), or the ranks of a `torchrun` launch.  predict and eval share it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

from mrcnn_cli.errors import MrcnnError, option


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N (the one place a shard is read from text)."""
    try:
        k, n = (int(v) for v in str(text).split('/'))
    except ValueError:
        raise MrcnnError(f'{option("shard")} must look like K/N (e.g. 0/4), not {text!r}') from None
    if not 0 <= k < n:
        raise MrcnnError(f'{option("shard")} {text}: need 0 <= K < N')
    return k, n


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch."""
    rank: int
    world: int
    local_rank: int


def distributed_context() -> Launch | None:
    """Where torchrun placed this process, or None when it was not launched by torchrun."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and int(os.environ['WORLD_SIZE']) > 1:
        return Launch(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0)))
    return None


def is_rank_zero() -> bool:
    """True in a process that is not a torchrun rank, or is rank 0 (the one that reports)."""
    launch = distributed_context()
    return launch is None or launch.rank == 0


def torchrun_device(device):
    """Under torchrun, 'auto' means this rank's own GPU (cuda:LOCAL_RANK), or the CPU."""
    ctx = distributed_context()
    if ctx and device == 'auto':
        import torch
        return f'cuda:{ctx.local_rank}' if torch.cuda.is_available() else 'cpu'
    return device


@contextmanager
def process_group(part, use_cuda):
    """torch.distributed for the ranks of a torchrun launch (None for any other partition), its
    process group destroyed when the block ends if it was made here: gloo's threads must not
    outlive the interpreter, where they abort the process at exit (pytorch/pytorch#190489)."""
    if not part.launcher:
        yield None
        return
    import torch.distributed as dist
    made = not dist.is_initialized()
    if made:
        dist.init_process_group('nccl' if use_cuda else 'gloo')
    try:
        yield dist
    finally:
        if made:
            dist.destroy_process_group()


@dataclass(frozen=True)
class Partition:
    """Which inputs this process takes: every `world`-th from `rank`."""
    rank: int = 0
    world: int = 1
    launcher: bool = False    # torchrun (ranks that meet at the end), not independent shards

    @property
    def tag(self):
        """The file-name tag of this process's own files: '', '.rank1' or '.shard-1-of-4'."""
        if self.launcher:
            return f'.rank{self.rank}'
        return f'.shard-{self.rank}-of-{self.world}' if self.world > 1 else ''

    def take(self, items):
        return list(items)[self.rank::self.world]


def partition(shard: tuple[int, int] | None = None) -> Partition:
    """This process's Partition, from torchrun's environment or a shard (K, N)."""
    ctx = distributed_context()
    if ctx and shard:
        raise MrcnnError(f'{option("shard")} is for separate processes; under torchrun the rank picks the shard')
    if ctx:
        return Partition(ctx.rank, ctx.world, launcher=True)
    if shard:
        k, n = shard
        return Partition(k, n)
    return Partition()
