"""How close diffusion-train's memory estimate (``JobKind.memory_bytes``) comes to what a job process really holds.

Runs a few steps of a few small training specs, each in its own job process on the CPU (as a worker runs it), and
prints each spec's estimate beside the process's peak resident memory, which the training loop reports in its
result (``peak_memory_bytes``). Asserts nothing.

    python benchmarks/memory_estimate.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from workers.kinds import builtin_kinds
from workers.kinds.memory import MIB

SPECS = [
    {"image_size": 8, "channels": [8, 16], "batch_size": 8},
    {"image_size": 16, "channels": [16, 32], "batch_size": 32},
    {"image_size": 32, "channels": [32, 64, 128], "batch_size": 64},
    {"image_size": 32, "channels": [64, 128, 256], "layers_per_block": 2, "batch_size": 64},
]


def main() -> int:
    kind = builtin_kinds().get("diffusion-train")
    print(f"{'spec':<80} {'estimate':>10} {'peak RSS':>10} {'ratio':>6}")
    for given in SPECS:
        spec = kind.validate({**given, "steps": 3, "num_train_timesteps": 20, "max_images": 64})
        with tempfile.TemporaryDirectory() as folder:
            job_file = Path(folder) / "job.json"
            job_file.write_text(json.dumps({"kind": kind.name, "spec": spec, "workdir": str(Path(folder) / "w")}))
            done = subprocess.run([sys.executable, "-m", "workers.job_process", "--job", str(job_file)],
                                  capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
        estimate, peak = kind.memory_bytes(spec), result["peak_memory_bytes"]
        print(f"{json.dumps(given):<80} {estimate / MIB:>7.0f} MiB {peak / MIB:>6.0f} MiB {estimate / peak:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
