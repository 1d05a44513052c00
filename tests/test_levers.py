"""``wattsched levers``: a tiny grid end to end through a real daemon (jobs, energy, report, charts), run twice to
show that the second run reuses the first one's jobs; and the figures' arithmetic and labels on known records."""

from __future__ import annotations

import json

import pytest
from daemon_fixtures import daemon  # noqa: F401  (the module's running daemon)

from scheduler.cli.commands import main
from scheduler.cli.levers import figures
from scheduler.cli.levers.grid import GRIDS, tiny_grid


@pytest.mark.slow
def test_a_tiny_grid_runs_through_the_daemon_and_a_second_run_reuses_its_jobs(daemon, tmp_path, capsys):  # noqa: F811
    argv = ["levers", "--url", daemon.url, "--token", daemon.token, "--grid", "tiny", "--out", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "records.json").read_text())
    records = saved["records"]
    assert [r["name"] for r in records] == [j.name for j in tiny_grid().jobs]
    assert all(r["job"]["state"] == "succeeded" and r["job"]["energy"]["energy_j"] > 0 for r in records)
    sample = next(r for r in records if r["name"] == "DDIM 25")["job"]["result"]
    assert sample["quality"]["method"].startswith("fid-lite") and sample["quality"]["num_images"] == 2
    report = (tmp_path / "report.md").read_text()
    # logical GPUs: the energy is simulated, and every section says so
    assert report.count("simulated (GPU simulated, CPU ") >= 3  # the CPU: rapl where readable, else estimate
    assert "NOT the standard FID" in report and "Skipped: pass --data" in report
    for chart in ("training.png", "sampling.png", "families.png"):
        assert (tmp_path / chart).read_bytes()[:4] == b"\x89PNG"

    assert main(argv) == 0
    again = json.loads((tmp_path / "records.json").read_text())["records"]
    assert [r["job"]["id"] for r in again] == [r["job"]["id"] for r in records]
    assert all(r["reused"] for r in again)
    assert "4 reused from an earlier run" in (tmp_path / "report.md").read_text()


def _record(name: str, group: str, energy_j: float, result: dict, spec: dict | None = None,
            methods=("simulated", "estimate"), family: str = "diffusion") -> dict:
    energy = {"energy_j": energy_j, "methods": list(methods), "gpu_method": methods[0], "cpu_method": methods[-1]}
    return {"name": name, "group": group, "family": family, "lever": name, "kind": "x",
            "job": {"id": name, "state": "succeeded", "energy": energy, "result": result, "spec": spec or {}}}


def test_net_figures_subtract_the_start_up_job_and_unknowns_stay_unknown():
    records = [
        _record("diffusion fp32", "training", 1100.0, {"steps_this_run": 101, "images_per_epoch": 1797},
                {"batch_size": 32}),
        _record("diffusion train start-up", "baseline", 100.0, {"steps_this_run": 1}),
        _record("DDIM 25", "sampling", 500.0, {"num_images": 11, "num_inference_steps": 25}),
    ]
    [train] = figures.training_rows(records)
    assert train["j_per_step"] == pytest.approx(1100 / 101)
    assert train["net_j_per_step"] == pytest.approx(10.0)
    assert train["j_per_epoch"] == pytest.approx(10.0 * 1797 / 32)
    [sample] = figures.sampling_rows(records)
    assert sample["net_j_per_image"] is None  # no start-up job for sampling: unknown, not the whole job's share
    assert sample["j_per_image"] == pytest.approx(500 / 11)


def test_a_figure_is_labelled_by_its_weakest_method():
    assert figures.method_label({"methods": ["nvml-counter", "rapl"], "gpu_method": "nvml-counter",
                                 "cpu_method": "rapl"}) == "measured (GPU nvml-counter, CPU rapl)"
    assert figures.method_label({"methods": ["nvml-counter", "estimate"]}).startswith("estimate")
    assert figures.method_label({"methods": ["simulated", "estimate"]}).startswith("simulated")
    assert figures.method_label(None) == "no energy recorded"


def test_energy_to_the_quality_target_is_pro_rata_where_scored_and_a_bound_where_not():
    records = [
        _record("diffusion fp32", "training", 1000.0, {"steps_this_run": 100}),
        _record("DDIM 25", "sampling", 50.0, {"num_images": 10, "quality": {"fid_lite": 5.0}}),
        _record("gan", "families", 300.0, {"steps_this_run": 100, "quality_curve": [[50, 9.0, 0.5], [100, 4.0, 0.8]]},
                family="gan"),
        _record("gan train start-up", "baseline", 100.0, {"steps_this_run": 1}, family="gan"),
    ]
    rows, target = figures.family_rows(records)
    by_family = {row["family"]: row for row in rows}
    assert target == 5.0  # the worst final score: diffusion's
    assert by_family["diffusion"]["to_target_j"] == 1000.0
    assert by_family["diffusion"]["to_target_note"].startswith("at most")
    assert by_family["gan"]["to_target_j"] == pytest.approx(100 + 200 * 1.0)  # first reached at step 100 of 100
    rows, _ = figures.family_rows(records, fid_target=10.0)
    assert {r["family"]: r["to_target_j"] for r in rows}["gan"] == pytest.approx(100 + 200 * 0.5)


def test_every_grid_names_each_job_once_refers_only_to_earlier_jobs_and_submits_valid_specs():
    from workers.kinds import builtin_kinds

    kinds = builtin_kinds()
    for grid in (factory() for factory in GRIDS.values()):
        seen: set[str] = set()
        for job in grid.jobs:
            assert job.name not in seen and all(name in seen for name in job.after), job.name
            seen.add(job.name)
            kinds.get(job.kind).validate(job.spec)  # a grid the daemon would refuse fails here


def test_fid_lite_tells_real_digits_from_noise():
    import numpy as np

    from workers.generative.quality import QUALITY_IMAGES, digit_quality, reference_quality

    real = reference_quality()
    noise = digit_quality(np.random.default_rng(0).integers(0, 256, (QUALITY_IMAGES, 16, 16, 1), dtype=np.uint8))
    assert real["num_images"] == noise["num_images"] == QUALITY_IMAGES
    assert real["mean_confidence"] > 0.9 and real["class_coverage"] == 1.0
    assert noise["fid_lite"] > 5 * real["fid_lite"]
    assert "not the standard FID" in real["method"]


def test_the_generative_kinds_name_the_field_they_refuse():
    from workers.errors import SpecError
    from workers.kinds import builtin_kinds
    from workers.kinds.base import ReferencedJob

    kinds = builtin_kinds()
    with pytest.raises(SpecError) as caught:
        kinds.get("gan-train").validate({"latent_dim": 0})
    assert caught.value.field == "spec.latent_dim"
    assert kinds.get("vae-train").validate({})["learning_rate"] == 1e-3
    sampler = kinds.get("generative-sample")
    spec = sampler.validate({"checkpoint": "job:abc"})
    diffusion = ReferencedJob("abc", "diffusion-train", {}, "/jobs/abc")
    with pytest.raises(SpecError, match="a diffusion-train job, not one of gan-train, vae-train") as caught:
        sampler.resolve(spec, lambda job_id: diffusion)
    assert caught.value.field == "spec.checkpoint"
    gan = ReferencedJob("abc", "gan-train", {}, "/jobs/abc")
    assert sampler.resolve(spec, lambda job_id: gan)["checkpoint"] == "/jobs/abc"


def test_images_of_any_size_are_scored_at_the_classifier_s_8x8():
    import numpy as np

    from workers.generative.quality import to_digit_features

    flat = np.full((2, 12, 12, 1), 51, dtype=np.uint8)  # 51 / 255 = 0.2 everywhere, whatever the filter
    assert to_digit_features(flat) == pytest.approx(np.full((2, 64), 0.2))
    ramp = np.repeat(np.arange(16, dtype=np.uint8)[None, None, :, None] * 16, 16, axis=1)  # columns 0, 16, ...
    assert to_digit_features(ramp)[0, :8] == pytest.approx((np.arange(8) * 32 + 8) / 255)
