"""diffusion-train across processes: ranks started with torchrun's environment train data-parallel (gloo on the
CPU) and end with the weights one process reaches at the same global batch; rank 0 alone checkpoints; a stop on
any rank stops them all at one step, and the ranks resume from rank 0's checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from workers.diffusion import train
from workers.diffusion.checkpoints import latest_checkpoint, load_training_state, load_unet
from workers.diffusion.data import load_images
from workers.diffusion.data_parallel import Ranks
from workers.errors import JobFailed, SpecError
from workers.kinds.diffusion_train import DiffusionTrain

REPO = Path(__file__).resolve().parents[1]
# Small enough for seconds per process on one CPU thread; the global batch of 8 splits into 2 x 4.
TINY = {
    "image_size": 8,
    "channels": [8, 16],
    "batch_size": 8,
    "num_train_timesteps": 20,
    "max_images": 64,
    "steps": 6,
    "checkpoint_every": 2,
}
#: Every rank must have finished within this; a hang (ranks waiting for each other) fails the test.
RANKS_TIMEOUT_S = 240
#: Weights of ranks and of one process differ only by the order float sums were taken in.
ATOL, RTOL = 1e-5, 1e-4
#: How far fp16 models trained by two ranks and by one process may predict apart.
FP16_ATOL = 5e-3
#: Below this largest gradient element a parameter counts as one the loss does not depend on.
INERT_GRADIENT = 1e-7

# What each rank runs: the kind, as a job process runs it. Records its progress reports, its result, and every
# checkpoint it saves (a spy that delegates to the real save), for the test to read back.
RANK_SCRIPT = r"""
import json, os, sys
from pathlib import Path
import workers.diffusion.checkpoints as checkpoints
from workers.kinds import JobContext
from workers.kinds.diffusion_train import DiffusionTrain

spec, workdir, out, stop_after = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
rank = os.environ["RANK"]
saves, reports, polls = [], [], []
real_save = checkpoints.save_checkpoint

def spy_save(root, name, **kwargs):
    saves.append(name)
    return real_save(root, name, **kwargs)

def should_stop():
    polls.append(None)
    return 0 <= stop_after < len(polls)

checkpoints.save_checkpoint = spy_save
kind = DiffusionTrain()
result = kind.run(kind.validate(spec), JobContext(workdir, reports.append, should_stop))
(out / f"rank-{rank}.json").write_text(json.dumps({"result": result, "reports": reports, "saves": saves}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(spec: dict, workdir: Path, world_size: int = 2, stop_rank: int | None = None,
              stop_after: int = -1) -> list[dict]:
    """Run the kind in world_size processes with torchrun's environment; each rank's result, reports, saves.

    stop_rank: the one rank whose should_stop turns True after stop_after steps (the others never ask).
    """
    out = workdir.parent / f"{workdir.name}-ranks"
    out.mkdir(exist_ok=True)
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    processes = []
    for rank in range(world_size):
        env = {
            **base,
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size), "NODE_RANK": "0",
            "WATTSCHED_TORCH_THREADS": "1",
        }
        argv = [sys.executable, "-c", RANK_SCRIPT, json.dumps(spec), str(workdir), str(out),
                str(stop_after if rank == stop_rank else -1)]
        processes.append(subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True))
    try:
        errors = [process.communicate(timeout=RANKS_TIMEOUT_S)[1] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for rank, (process, stderr) in enumerate(zip(processes, errors)):
        assert process.returncode == 0, f"rank {rank} exited {process.returncode}:\n{stderr[-3000:]}"
    return [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(world_size)]


def weights(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    return load_unet(Path(checkpoint)).state_dict()


def inert_parameters(checkpoint: str | Path) -> set[str]:
    """Parameters the training loss does not depend on: their gradient is zero but for rounding.

    In this UNet they are the attention's key bias (softmax ignores a constant shift) and the biases and time
    projections that feed a GroupNorm of one channel per group (the norm removes a per-channel constant). Adam
    scales their rounding noise, which differs with the order sums are taken in, up to steps of ~learning_rate;
    the model's function does not change with them, so they are left out of the comparison of weights.
    """
    model = load_unet(Path(checkpoint))
    images = load_images("digits", TINY["image_size"], TINY["max_images"])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    timesteps = torch.arange(len(images)) % TINY["num_train_timesteps"]
    noisy = DDPMScheduler(num_train_timesteps=TINY["num_train_timesteps"]).add_noise(images, noise, timesteps)
    F.mse_loss(model(noisy, timesteps).sample, noise).backward()
    # A gap of orders of magnitude: the inert ones are below 1e-8, the others above 1e-5.
    return {name for name, p in model.named_parameters() if p.grad.abs().max() < INERT_GRADIENT}


def predictions(checkpoint: str | Path) -> torch.Tensor:
    """The model's noise predictions on a fixed noisy batch: what it computes, whatever its inert parameters."""
    model = load_unet(Path(checkpoint)).eval()
    generator = torch.Generator().manual_seed(2)
    noisy = torch.randn((16, 1, TINY["image_size"], TINY["image_size"]), generator=generator)
    timesteps = torch.randint(TINY["num_train_timesteps"], (16,), generator=generator)
    with torch.no_grad():
        return model(noisy, timesteps).sample


def assert_same_model(checkpoint: str | Path, reference: dict) -> None:
    """The checkpoint holds the reference's weights (but its inert ones) and computes its predictions."""
    trained = weights(checkpoint)
    assert trained.keys() == reference["weights"].keys()
    for name in trained.keys() - reference["inert"]:
        torch.testing.assert_close(trained[name], reference["weights"][name], atol=ATOL, rtol=RTOL, msg=name)
    torch.testing.assert_close(predictions(checkpoint), reference["predictions"], atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the same spec trained by one process; its result, weights, inert ones and predictions."""
    workdir = tmp_path_factory.mktemp("one-process")
    result = train(DiffusionTrain().parse(TINY), workdir)
    checkpoint = result["checkpoint"]
    inert = inert_parameters(checkpoint)
    # A few biases and projections of dozens of tensors; most of the model is compared weight by weight.
    assert 0 < len(inert) < len(weights(checkpoint)) // 4
    return {"result": result, "weights": weights(checkpoint), "inert": inert, "predictions": predictions(checkpoint)}


@pytest.mark.slow
def test_two_ranks_reach_the_weights_of_one_process_at_the_same_global_batch(one_process, tmp_path):
    single = one_process["result"]
    rank0, rank1 = run_ranks(TINY, tmp_path / "job")

    final = tmp_path / "job" / "checkpoints" / "final"
    assert rank0["result"]["checkpoint"] == rank1["result"]["checkpoint"] == str(final)
    assert_same_model(final, one_process)
    # The comparison can fail: one process at a rank's share of the batch (4) ends elsewhere.
    half = train(DiffusionTrain().parse({**TINY, "batch_size": 4}), tmp_path / "half-batch")
    with pytest.raises(AssertionError):
        assert_same_model(half["checkpoint"], one_process)

    assert rank0["result"]["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert rank0["result"]["world_size"] == 2
    # The global batch: 6 steps of 8 images, half on each rank.
    assert rank0["result"]["images_seen"] == single["images_seen"] == 6 * 8
    # Rank 0 alone saves and reports, as one process would; rank 1 stays silent.
    assert rank0["saves"] == ["step-000002", "step-000004", "final"]
    assert rank1["saves"] == [] and rank1["reports"] == []
    assert rank0["reports"][-1] == {"step": 6, "total": 6, "loss": rank0["result"]["final_loss"]}
    assert sorted(p.name for p in (tmp_path / "job" / "checkpoints").iterdir()) == [
        "final", "step-000002", "step-000004"
    ]


@pytest.mark.slow
def test_a_stop_on_one_rank_stops_both_and_two_ranks_resume_to_the_uninterrupted_weights(one_process, tmp_path):
    workdir = tmp_path / "job"
    # Only rank 1 is asked to stop (after 3 steps): both stop there, and rank 0 writes the checkpoint.
    rank0, rank1 = run_ranks(TINY, workdir, stop_rank=1, stop_after=3)
    for rank in (rank0, rank1):
        assert rank["result"]["stopped"] is True and rank["result"]["steps_done"] == 3
    assert rank0["saves"] == ["step-000002", "step-000003"] and rank1["saves"] == []
    assert latest_checkpoint(workdir / "checkpoints").name == "step-000003"

    rank0, rank1 = run_ranks(TINY, workdir)
    for rank in (rank0, rank1):
        assert rank["result"]["stopped"] is False
        assert (rank["result"]["resumed_from_step"], rank["result"]["steps_done"]) == (3, 6)
    assert_same_model(workdir / "checkpoints" / "final", one_process)


@pytest.mark.slow
def test_under_fp16_two_ranks_scale_their_averaged_gradients_as_one_process_does(tmp_path):
    # DDP averages the scaled gradients before the scaler looks at them, so every rank unscales the same
    # gradients, takes the same skip-or-step decision, and ends with one process's scale and weights.
    spec = {**TINY, "mixed_precision": "fp16"}
    single = train(DiffusionTrain().parse(spec), tmp_path / "one")
    rank0, rank1 = run_ranks(spec, tmp_path / "job")

    final = tmp_path / "job" / "checkpoints" / "final"
    assert rank0["result"]["checkpoint"] == rank1["result"]["checkpoint"] == str(final)
    scaler = load_training_state(final)["scaler"]
    assert scaler == load_training_state(Path(single["checkpoint"]))["scaler"]
    assert scaler["_growth_tracker"] == TINY["steps"]  # no step of either run overflowed and was skipped
    assert rank0["result"]["final_loss"] == pytest.approx(single["final_loss"], rel=1e-3)
    # float16 rounds the ranks' partial sums differently from one process's, so the models agree to fp16's
    # precision, not fp32's (measured: 2e-3 here; one process at fp32 ends 9e-3 away, at half the batch 0.9).
    torch.testing.assert_close(predictions(final), predictions(single["checkpoint"]), atol=FP16_ATOL, rtol=0)


def test_a_batch_that_does_not_split_evenly_between_the_ranks_is_refused(tmp_path, monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    # Refused before joining the group: no rank 1 exists here, so joining would wait for it.
    with pytest.raises(SpecError) as caught:
        train(DiffusionTrain().parse({**TINY, "batch_size": 7}), tmp_path)
    assert caught.value.field == "spec.batch_size"
    assert "multiple of 2" in str(caught.value)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Ranks()),
        ({"WORLD_SIZE": "1"}, Ranks()),
        ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"},
         Ranks(rank=3, world_size=4, local_rank=1)),
    ],
)
def test_ranks_come_from_torchruns_environment(environ, expected):
    assert Ranks.from_env(environ) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "h"}, "MASTER_PORT"),
        ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2"),
    ],
)
def test_an_incomplete_torchrun_environment_is_refused_naming_the_variable(environ, named):
    with pytest.raises(JobFailed, match=named):
        Ranks.from_env(environ)
