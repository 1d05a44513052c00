"""The study's figures, computed from the jobs as the daemon recorded them (the records ``runner`` keeps).

Works on plain dicts (``Record.to_dict``: name, group, family, lever, kind, job), so a report can be made again
from a saved ``records.json``. A figure is None when a job it needs did not succeed or recorded no energy: an
unknown is never a zero. Each row carries the method label of the energy it comes from (``method_label``).

Net figures subtract a baseline job of one step or one image (start-up, loading, scoring) from a job's energy
and divide by the remaining units: what one more step or image costs. They are differences of two measurements
and can come out at or below zero when the work is smaller than the meter's noise; those are given as None.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

#: Methods that are readings of a meter; anything else (estimate, simulated) is not a measurement.
MEASURED_METHODS = frozenset({"nvml-counter", "nvml-power-poll", "rapl"})
MIB = 1024 * 1024


def method_label(energy: Mapping[str, Any] | None) -> str:
    """``measured``, ``estimate`` or ``simulated`` (the weakest of the job's figures), with the methods per part."""
    if not energy or not energy.get("methods"):
        return "no energy recorded"
    methods = set(energy["methods"])
    kind = "simulated" if "simulated" in methods else "measured" if methods <= MEASURED_METHODS else "estimate"
    parts = [f"{part} {energy[key]}" for part, key in (("GPU", "gpu_method"), ("CPU", "cpu_method"))
             if energy.get(key)]
    return f"{kind} ({', '.join(parts)})" if parts else kind


def _succeeded(record: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    job = (record or {}).get("job") or {}
    return job if job.get("state") == "succeeded" else None


def energy_j(record: Mapping[str, Any] | None) -> float | None:
    job = _succeeded(record)
    energy = (job or {}).get("energy") or {}
    return energy.get("energy_j")


def result(record: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (_succeeded(record) or {}).get("result") or {}


def _net(total_j: float | None, baseline_j: float | None, units: float | None) -> float | None:
    """(total - baseline) / (units - 1): the cost of one more unit; None when unknown or not above zero."""
    if total_j is None or baseline_j is None or not units or units <= 1:
        return None
    net = (total_j - baseline_j) / (units - 1)
    return net if net > 0 else None


def _per(value: float | None, units: float | None) -> float | None:
    return None if value is None or not units else value / units


def _by_name(records: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {r["name"]: r for r in records}


def _common(record: Mapping[str, Any]) -> dict[str, Any]:
    job = record.get("job") or {}
    energy = job.get("energy") or {}
    return {"name": record["name"], "lever": record["lever"], "state": job.get("state", "not submitted"),
            "energy_j": energy_j(record), "duration_s": energy.get("duration_s") if _succeeded(record) else None,
            "method": method_label(energy), "job_id": job.get("id")}


def training_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per training job: energy per optimizer step (whole job and net of start-up), per epoch (net of start-up:
    an epoch of a long run), peak memory, final loss."""
    baseline = energy_j(next((r for r in records if r["name"] == "diffusion train start-up"), None))
    rows = []
    for record in records:
        if record["group"] != "training":
            continue
        res, spec = result(record), (record.get("job") or {}).get("spec") or {}
        row = _common(record)
        steps = res.get("steps_this_run")
        net_step = _net(row["energy_j"], baseline, steps)
        batch = spec.get("batch_size")
        epoch_steps = res["images_per_epoch"] / batch if res.get("images_per_epoch") and batch else None
        row.update({
            "steps": steps, "batch_size": batch, "j_per_step": _per(row["energy_j"], steps),
            "net_j_per_step": net_step,
            "j_per_epoch": None if net_step is None or epoch_steps is None else net_step * epoch_steps,
            "peak_memory_mib": res["peak_memory_bytes"] / MIB if res.get("peak_memory_bytes") else None,
            "peak_memory_method": res.get("peak_memory_method"), "final_loss": res.get("final_loss"),
        })
        rows.append(row)
    return rows


def _quality(res: Mapping[str, Any]) -> dict[str, Any]:
    quality = res.get("quality") or {}
    return {"fid_lite": quality.get("fid_lite"), "mean_confidence": quality.get("mean_confidence"),
            "class_coverage": quality.get("class_coverage"), "quality_images": quality.get("num_images")}


def sampling_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per diffusion sampling job: energy per image (whole job and net of start-up) and the quality score."""
    baseline = energy_j(next((r for r in records if r["name"] == "diffusion sample start-up"), None))
    rows = []
    for record in records:
        if record["group"] != "sampling":
            continue
        res, spec = result(record), (record.get("job") or {}).get("spec") or {}
        row = _common(record)
        images = res.get("num_images")
        row.update({"sampler": res.get("sampler"), "steps": res.get("num_inference_steps"),
                    "batch_size": spec.get("batch_size"), "images": images,
                    "j_per_image": _per(row["energy_j"], images),
                    "net_j_per_image": _net(row["energy_j"], baseline, images), **_quality(res)})
        rows.append(row)
    return rows


def family_rows(records: Sequence[Mapping[str, Any]], fid_target: float | None = None) -> tuple[list[dict], float]:
    """Diffusion, GAN and VAE: training energy, energy to reach the FID-lite target, energy per generated image.

    The target is ``fid_target``, or else the worst final FID-lite among the families (a level every family
    reached). Returns the rows and the target used.
    """
    by_name = _by_name(records)
    sample_names = {"diffusion": "DDIM 25", "gan": "gan sample", "vae": "vae sample"}
    train_names = {"diffusion": "diffusion fp32", "gan": "gan", "vae": "vae"}
    train_baseline = {"diffusion": energy_j(by_name.get("diffusion train start-up")),
                      "gan": energy_j(by_name.get("gan train start-up"))}
    train_baseline["vae"] = train_baseline["gan"]  # the same code path up to the first step
    sample_baseline = {"diffusion": energy_j(by_name.get("diffusion sample start-up")),
                       "gan": energy_j(by_name.get("gan sample start-up"))}
    sample_baseline["vae"] = sample_baseline["gan"]
    rows = []
    for family, train_name in train_names.items():
        train, sample = by_name.get(train_name), by_name.get(sample_names[family])
        if train is None:
            continue
        res, sample_res = result(train), result(sample)
        curve = res.get("quality_curve") or []
        final_fid = curve[-1][1] if curve else _quality(sample_res)["fid_lite"]
        images = sample_res.get("num_images")
        rows.append({
            "family": family, "train_job": train_name, "sample_job": sample_names[family],
            "train_energy_j": energy_j(train), "train_steps": res.get("steps_this_run"),
            "train_method": method_label(((train.get("job") or {}).get("energy"))),
            "final_fid_lite": final_fid, "curve": curve, "baseline_j": train_baseline[family],
            "parameters": res.get("parameters"),
            "sample_images": images, "j_per_image": _per(energy_j(sample), images),
            "net_j_per_image": _net(energy_j(sample), sample_baseline[family], images),
            "sample_method": method_label(((sample or {}).get("job") or {}).get("energy")),
        })
    known = [r["final_fid_lite"] for r in rows if r["final_fid_lite"] is not None]
    target = fid_target if fid_target is not None else (max(known) if known else float("nan"))
    for row in rows:
        row.update(_to_target(row, target))
    return rows, target


def _to_target(row: Mapping[str, Any], target: float) -> dict[str, Any]:
    """The training energy to reach FID-lite <= target: pro rata by steps (net of start-up) at the first scored
    step that reached it; only an upper bound (the whole job) when the job scored its samples at the end only."""
    energy, steps, curve = row["train_energy_j"], row["train_steps"], row["curve"]
    if energy is None or row["final_fid_lite"] is None:
        return {"to_target_j": None, "to_target_note": "unknown"}
    reached = next((point for point in curve if point[1] <= target), None)
    if curve and reached is None:
        return {"to_target_j": None, "to_target_note": "not reached"}
    if not curve:
        if row["final_fid_lite"] > target:
            return {"to_target_j": None, "to_target_note": "not reached"}
        return {"to_target_j": energy, "to_target_note": "at most (scored at the end only)"}
    baseline = row["baseline_j"] or 0.0
    share = reached[0] / steps if steps else 1.0
    # Never more than the whole job: a start-up job measured above it is noise, not work.
    return {"to_target_j": min(energy, baseline + (energy - baseline) * share),
            "to_target_note": f"at step {reached[0]} of {steps} (pro rata)"}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b
