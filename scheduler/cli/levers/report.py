"""The study's report: ``report.md`` (Markdown tables) and PNG charts, every figure labelled with its method.

matplotlib is imported only here, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from scheduler.cli.levers import figures

NA = "n/a"
FID_NOTE = ("FID-lite: the Fréchet distance between a small digits classifier's hidden features of the generated "
            "images and of the real digits (lower is better). It is NOT the standard FID (no Inception network); "
            "compare it only with other FID-lite figures, all scored on the same number of images.")


def _n(value: float | None, digits: int = 3) -> str:
    if value is None:
        return NA
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def _share(value: float | None) -> str:
    return NA if value is None else f"{value:.1%}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _methods(rows: Sequence[Mapping[str, Any]], key: str = "method") -> str:
    return "; ".join(sorted({row[key] for row in rows if row.get(key)})) or "no energy recorded"


def write_report(out: Path, records: Sequence[Mapping[str, Any]], context: Mapping[str, str],
                 scheduling: Sequence[Mapping[str, Any]] | None, scheduling_note: str,
                 fid_target: float | None = None) -> Path:
    """Write report.md and the charts into ``out``; returns report.md's path.

    context: lines for the header (machine, daemon, grid, command, date). scheduling: the simulator's rows, or
    None when skipped (``scheduling_note`` says why).
    """
    out.mkdir(parents=True, exist_ok=True)
    training = figures.training_rows(records)
    sampling = figures.sampling_rows(records)
    families, target = figures.family_rows(records, fid_target)
    failed = [r["name"] for r in records if ((r.get("job") or {}).get("state")) != "succeeded"]
    parts = ["# What the levers are worth", ""]
    parts += [f"- {key}: {value}" for key, value in context.items()]
    if failed:
        parts.append(f"- jobs that did not succeed (their figures are n/a): {', '.join(failed)}")
    parts += ["", "Energy is what the daemon recorded for each job (GPU + CPU, whole job: process start-up, loading "
              "and scoring included). *Net* figures subtract a one-step or one-image job of the same kind and divide "
              "by the remaining steps or images: the cost of one more (n/a when within the meter's noise).", ""]

    parts += ["## Training levers (diffusion)", "",
              f"Energy method: {_methods(training)}.", "",
              _table(("job", "lever", "steps", "batch", "energy J", "J/step", "net J/step", "J/epoch", "peak MiB",
                      "final loss", "time s"),
                     [(r["name"], r["lever"], _n(r["steps"]), _n(r["batch_size"]), _n(r["energy_j"]),
                       _n(r["j_per_step"]), _n(r["net_j_per_step"]), _n(r["j_per_epoch"]),
                       _n(r["peak_memory_mib"]), _n(r["final_loss"]), _n(r["duration_s"])) for r in training]),
              "", f"Peak memory: {_methods(training, 'peak_memory_method')} (on a CPU the process's peak resident set, "
              "libraries included; on a GPU torch's peak allocated memory). J/epoch: net J/step x dataset images / "
              "batch.", "", "![training levers](training.png)", ""]

    parts += ["## Sampling levers (diffusion)", "", f"Energy method: {_methods(sampling)}. {FID_NOTE}"
              f"{_reference_line()}", "",
              _table(("job", "lever", "images", "energy J", "J/image", "net J/image", "FID-lite", "confidence",
                      "classes covered", "scored images", "time s"),
                     [(r["name"], r["lever"], _n(r["images"]), _n(r["energy_j"]), _n(r["j_per_image"]),
                       _n(r["net_j_per_image"]), _n(r["fid_lite"]), _n(r["mean_confidence"]),
                       _share(r["class_coverage"]), _n(r["quality_images"]), _n(r["duration_s"]))
                      for r in sampling]),
              "", "![sampling levers](sampling.png)", ""]

    parts += _families_section(families, target)
    parts += _scheduling_section(scheduling, scheduling_note)
    _plot(out, training, sampling, families, scheduling)
    path = out / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _reference_line() -> str:
    """What real digits score, for scale; empty where the worker's packages (scikit-learn) are not installed."""
    try:
        from workers.generative.quality import reference_quality

        real = reference_quality()
    except ImportError:
        return ""
    return (f" For scale, {real['num_images']} real digits drawn at random score FID-lite {_n(real['fid_lite'])}, "
            f"confidence {_n(real['mean_confidence'])}, classes covered {_share(real['class_coverage'])}.")


def _families_section(families: Sequence[Mapping[str, Any]], target: float) -> list[str]:
    by_family = {r["family"]: r for r in families}
    rows = [(r["family"], _n(r["parameters"]), _n(r["train_steps"]), _n(r["train_energy_j"]),
             _n(r["final_fid_lite"]), f"{_n(r['to_target_j'])} ({r['to_target_note']})", _n(r["j_per_image"]),
             _n(r["net_j_per_image"]), r["train_method"]) for r in families]
    diffusion = by_family.get("diffusion", {})
    ratios = []
    for other in ("gan", "vae"):
        row = by_family.get(other)
        if row is None or not diffusion:
            continue
        ratios.append((f"diffusion / {other.upper()}",
                       _n(figures.ratio(diffusion.get("train_energy_j"), row["train_energy_j"])),
                       _n(figures.ratio(diffusion.get("to_target_j"), row["to_target_j"])),
                       _n(figures.ratio(diffusion.get("net_j_per_image"), row["net_j_per_image"])),
                       f"{diffusion.get('train_method')} / {row['train_method']}"))
    return ["## Families: diffusion vs GAN vs VAE", "",
            f"Same data (8x8 digits), models of similar size. Quality target: FID-lite <= {_n(target)} (unless "
            "given, the worst final score among the families: a level each reached). Diffusion's samples are "
            "scored after training only (DDIM 25), so its energy to the target is an upper bound; the GAN and "
            "VAE score theirs as they train, and their energy to the target is pro rata by steps, net of "
            f"start-up. Per image: diffusion with DDIM 25; GAN and VAE from one large sampling job. {FID_NOTE}", "",
            _table(("family", "parameters", "train steps", "train energy J", "final FID-lite",
                    "energy to target J", "J/image", "net J/image", "energy method"), rows),
            "", "Measured ratios (the method of each side as labelled):", "",
            _table(("ratio", "training energy", "training energy to target", "net energy per image",
                    "methods"), ratios),
            "", "![families](families.png)", ""]


def _scheduling_section(scheduling: Sequence[Mapping[str, Any]] | None, note: str) -> list[str]:
    if not scheduling:
        return ["## Scheduling levers (simulated)", "", f"Skipped: {note}", ""]
    rows = [(r["lever"], _n(r["jobs"]), _n(r["fifo_kg"]), _n(r["aware_kg"]), _n(r["fifo_kwh"]), _n(r["aware_kwh"]),
             _share(r["saving"])) for r in scheduling]
    return ["## Scheduling levers (simulated)", "", f"Method: {scheduling[0]['method']}. {note}", "",
            _table(("lever", "jobs", "fifo kg CO2e", "carbon-aware kg CO2e", "fifo kWh", "carbon-aware kWh",
                    "carbon saved"), rows), "", "![scheduling levers](scheduling.png)", ""]


def _plot(out: Path, training, sampling, families, scheduling) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bars(path: str, labels, values, ylabel: str, title: str) -> None:
        figure, axis = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
        axis.bar(range(len(labels)), [v if v is not None else 0.0 for v in values], color="#4c72b0")
        for i, value in enumerate(values):
            if value is None:
                axis.text(i, 0, NA, ha="center", va="bottom")
        axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        axis.set_ylabel(ylabel)
        axis.set_title(title, fontsize="medium")
        axis.grid(axis="y", alpha=0.3)
        figure.savefig(out / path, dpi=100, format="png")
        plt.close(figure)

    def per_step(row):
        return row["net_j_per_step"] if row["net_j_per_step"] is not None else row["j_per_step"]

    bars("training.png", [r["lever"] for r in training], [per_step(r) for r in training],
         "energy per optimizer step (J)", f"Diffusion training levers: J/step, net of start-up where known\n"
                                          f"energy: {_methods(training)}")
    figure, axis = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    for row in sampling:
        energy = row["net_j_per_image"] if row["net_j_per_image"] is not None else row["j_per_image"]
        if energy is not None and row["fid_lite"] is not None:
            axis.scatter(energy, row["fid_lite"], color="#dd8452")
            axis.annotate(row["name"], (energy, row["fid_lite"]), fontsize="small", xytext=(4, 4),
                          textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("energy per image (J, net of start-up where known; log scale)")
    axis.set_ylabel("FID-lite (lower is better; NOT the standard FID)")
    axis.set_title(f"Diffusion sampling levers\nenergy: {_methods(sampling)}", fontsize="medium")
    axis.grid(alpha=0.3)
    figure.savefig(out / "sampling.png", dpi=100, format="png")
    plt.close(figure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4.2), constrained_layout=True)
    names = [r["family"] for r in families]
    for axis, key, label in ((left, "to_target_j", "training energy to the FID-lite target (J)"),
                             (right, "net_j_per_image", "net energy per generated image (J, log)")):
        values = [r[key] for r in families]
        axis.bar(range(len(names)), [v if v is not None else 0.0 for v in values], color="#55a868")
        for i, row in enumerate(families):
            bound = key == "to_target_j" and row["to_target_note"].startswith("at most")
            if values[i] is None or bound:
                axis.text(i, values[i] or 0.0, NA if values[i] is None else "at most", ha="center", va="bottom",
                          fontsize="small")
        axis.set_xticks(range(len(names)), names)
        axis.set_title(label, fontsize="small")
        if key == "net_j_per_image" and any(v for v in values):
            axis.set_yscale("log")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"Diffusion vs GAN vs VAE. Energy: {_methods(families, 'train_method')}", fontsize="small")
    figure.savefig(out / "families.png", dpi=100, format="png")
    plt.close(figure)

    if scheduling:
        bars("scheduling.png", [r["lever"] for r in scheduling], [100 * (r["saving"] or 0) for r in scheduling],
             "carbon saved vs fifo (%)", f"Scheduling levers on the same workload\n{scheduling[0]['method']}")
