"""Charts of the energy history: ``wattsched history --plot FILE.png``.

matplotlib is imported here only, with the Agg backend (no display needed), so the CLI stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from policies.units import J_PER_KWH
from scheduler.store.exports import group_key

PLOT_BY = ("kind", "user", "zone")


def plot_history(rows: Sequence[Mapping[str, Any]], path: str | Path, by: str = "kind") -> Path:
    """Energy (kWh) and emissions (g CO2e) per UTC day, stacked per ``by`` (kind, user or zone), as a PNG.

    The title says how the energy was obtained (simulated, estimate, ...): a chart must not pass a simulated
    figure off as a measurement.
    """
    if by not in PLOT_BY:
        raise ValueError(f"--plot-by: must be one of {', '.join(PLOT_BY)}, got {by!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("energy_j") is not None]
    days = sorted({group_key(r, "day") for r in rows})
    series = sorted({group_key(r, by) for r in rows})
    energy = {s: [0.0] * len(days) for s in series}
    emissions = {s: [0.0] * len(days) for s in series}
    for row in rows:
        i, s = days.index(group_key(row, "day")), group_key(row, by)
        energy[s][i] += (row.get("energy_j") or 0.0) / J_PER_KWH
        emissions[s][i] += row.get("emissions_g") or 0.0
    methods = sorted({m for r in rows for m in r.get("methods") or ()})

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, constrained_layout=True)
    positions = list(range(len(days)))
    for axis, values, label in ((top, energy, "energy (kWh)"), (bottom, emissions, "emissions (g CO2e)")):
        base = [0.0] * len(days)
        for s in series:
            axis.bar(positions, values[s], bottom=base, label=s, width=0.7)
            base = [b + v for b, v in zip(base, values[s])]
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
    top.legend(title=by, fontsize="small", loc="upper left")
    bottom.set_xticks(positions, days, rotation=45 if len(days) > 6 else 0, ha="right" if len(days) > 6 else "center")
    bottom.set_xlabel("day (UTC)")
    how = "+".join(methods) if methods else "no energy recorded"
    top.set_title(f"wattsched energy and emissions per day, by {by} ({len(rows)} jobs; energy: {how})")
    if not rows:
        top.text(0.5, 0.5, "no jobs with energy in this range", ha="center", va="center", transform=top.transAxes)
    path = Path(path)
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)
    return path
