"""Train a small DDPM on scikit-learn's 8x8 digits: a plain PyTorch + diffusers loop that honours wattsched's job
protocol, alone, under torch.distributed, or as a wattsched ``command`` job.

    python examples/train_diffusers.py --steps 200                        # alone, on this machine
    torchrun --nproc-per-node 2 examples/train_diffusers.py --steps 200   # two processes, data-parallel
    wattsched submit command --gpus 2 --interruptible -- python examples/train_diffusers.py --steps 2000

The protocol (docs/command-jobs.md), all of it optional, so the script runs without wattsched too:

- ``WATTSCHED_JOB_DIR``: checkpoints go there (``checkpoint.pt``), every ``--checkpoint-every`` steps and when the
  job is asked to stop; without it, ``--output``.
- ``WATTSCHED_RESUMING=1``: an earlier run was stopped or lost; continue from the checkpoint (``--resume`` asks the
  same by hand).
- The stop signal (SIGTERM unless the job was submitted with ``--signal``): every signal wattsched may send is
  caught; the ranks agree to stop after the same step, rank 0 checkpoints, and every rank exits 0.
- ``WATTSCHED_PROGRESS``: rank 0 appends ``{"step", "total", "loss"}`` lines, which wattsched shows and learns
  the job's length from.
- ``WORLD_SIZE`` > 1 (torchrun's environment, which wattsched gives every process of a ``per-gpu`` job): one
  process per GPU under DistributedDataParallel, gloo on the CPU and NCCL on CUDA; ``--batch-size`` is the
  global batch, split evenly between the ranks.
"""

from __future__ import annotations

import signal

# Installed before the slow imports below: a stop asked while torch loads must not kill the process.
_STOP_ASKED: list[int] = []
for _name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2"):
    signal.signal(getattr(signal, _name), lambda signum, _frame: _STOP_ASKED.append(signum))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

CHECKPOINT = "checkpoint.pt"
#: Seconds between two progress lines at most (and one on the first and the last step).
PROGRESS_INTERVAL_S = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps of the whole job (default 500)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, over every rank (default 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--timesteps", type=int, default=100, help="DDPM noise schedule length (default 100)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="train-diffusers", help="checkpoint folder without WATTSCHED_JOB_DIR")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint, as WATTSCHED_RESUMING=1")
    return parser.parse_args(argv)


def digits() -> torch.Tensor:
    """scikit-learn's 1797 digits as float32 N x 1 x 8 x 8 in [-1, 1], the range a DDPM learns."""
    images = load_digits().images.astype(np.float32) / 16.0
    return torch.from_numpy(images)[:, None] * 2.0 - 1.0


def build_unet() -> UNet2DModel:
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)


def save_checkpoint(path: Path, unet: UNet2DModel, optimizer: torch.optim.Optimizer, step: int,
                    loss: float | None) -> None:
    """Written beside and renamed into place: a kill in the middle leaves the previous checkpoint whole."""
    partial = path.with_name(path.name + ".partial")
    torch.save({"model": unet.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "loss": loss}, partial)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of the {world_size} processes")
    torch.set_num_threads(int(os.environ.get("WATTSCHED_TORCH_THREADS", "1")))
    if torch.cuda.is_available():  # each process sees its own GPU, or all of them (then LOCAL_RANK's is its)
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    distributed = world_size > 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    job_dir = Path(os.environ.get("WATTSCHED_JOB_DIR") or args.output)
    job_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = job_dir / CHECKPOINT
    resuming = args.resume or os.environ.get("WATTSCHED_RESUMING") == "1"

    images = digits()
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.timesteps)
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    unet = build_unet().to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr)
    step, loss = 0, None
    if resuming and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device)
        unet.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, loss = state["step"], state["loss"]
        print(f"rank {rank}: resuming from {checkpoint} at step {step}", flush=True)
    elif resuming:
        print(f"rank {rank}: asked to resume but there is no {checkpoint}; starting over", flush=True)
    model = DistributedDataParallel(unet, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else unet

    progress_path = os.environ.get("WATTSCHED_PROGRESS")
    progress = open(progress_path, "a") if progress_path and rank == 0 else None
    share = args.batch_size // world_size
    start_step, last_report_s, saved_step = step, 0.0, step
    while step < args.steps:
        # Every rank takes the same decision, after the same step: one that stopped alone would leave the others
        # waiting forever for its gradients.
        stop = torch.tensor([1.0 if _STOP_ASKED else 0.0])
        if distributed:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item():
            break
        # Drawn from a generator of (seed, step): a resumed run draws what an uninterrupted one would have.
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        index = torch.randint(len(images), (args.batch_size,), generator=generator)[rank * share:(rank + 1) * share]
        clean = images[index].to(device)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(args.timesteps, (share,), generator=generator).to(device)
        predicted = model(noise_scheduler.add_noise(clean, noise, timesteps), timesteps).sample
        batch_loss = F.mse_loss(predicted, noise)
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        step, loss = step + 1, batch_loss.item()
        if rank == 0 and step % args.checkpoint_every == 0:
            save_checkpoint(checkpoint, unet, optimizer, step, loss)
            saved_step = step
        now_s = time.monotonic()
        if progress and (step == start_step + 1 or step == args.steps or now_s - last_report_s >= PROGRESS_INTERVAL_S):
            progress.write(json.dumps({"step": step, "total": args.steps, "loss": round(loss, 6)}) + "\n")
            progress.flush()
            last_report_s = now_s

    stopped = step < args.steps
    if rank == 0 and (step > saved_step or not checkpoint.exists()):
        save_checkpoint(checkpoint, unet, optimizer, step, loss)
    if distributed:
        dist.barrier()  # no rank leaves before rank 0 has checkpointed
        dist.destroy_process_group()
    if rank == 0:
        what = f"stopped at step {step} of {args.steps}" if stopped else f"finished {args.steps} steps"
        print(f"{what} (this run: {step - start_step}); loss {loss}; checkpoint {checkpoint}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
