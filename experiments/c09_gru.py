"""C9: GRU has fewer parameters (exact, by construction) and trains faster (measured, as found)."""

import shutil
from pathlib import Path

from gradflow.experiments.shared import by_label, config_run, median

from gradflow import cells, param_count

CRITERIA = {"weights_ratio": 0.75}


def run(out: Path, quick: bool) -> dict:
    run_dir, summary = config_run("adding", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c09.png")
    m, n = 32, 64
    lstm = param_count(cells.get("lstm", hidden_size=n), m).by_leaf
    gru = param_count(cells.get("gru", hidden_size=n), m).by_leaf
    weights = lambda c: c["['w_ih']"] + c["['w_hh']"]  # noqa: E731
    rows = {}
    for label, runs in by_label(summary).items():
        if runs[0]["cell"] in ("lstm", "gru"):
            rows[label] = {
                "cell": runs[0]["cell"],
                "time_per_step_ms": 1000 * median(r["time_per_step_s"] for r in runs),
                "median_solved_step": median(r["solved_step"] for r in runs if r["solved"]),
                "solved": sum(r["solved"] for r in runs),
                "seeds": len(runs),
                "params": runs[0]["param_count"],
            }
    return {
        "weights_ratio": weights(gru) / weights(lstm),
        "totals": {"lstm": sum(lstm.values()), "gru": sum(gru.values()), "m": m, "n": n},
        "settings": rows,
        "figure": str(out / "c09.png"),
        "runs": [str(run_dir)],
    }


def verdict(numbers: dict, criteria: dict):
    rows = numbers["settings"]
    pairs = []
    for label, v in rows.items():
        if v["cell"] == "gru":
            lstm = rows.get(label.replace("GRU", "LSTM"))
            if lstm:
                pairs.append((label, v, lstm))
    fewer = abs(numbers["weights_ratio"] - criteria["weights_ratio"]) < 1e-12
    time_ratio = median(g["time_per_step_ms"] / l["time_per_step_ms"] for _, g, l in pairs)
    step_ratio = median(g["median_solved_step"] / l["median_solved_step"] for _, g, l in pairs)
    t = numbers["totals"]
    measured = (
        f"GRU/LSTM weights {numbers['weights_ratio']:.4f} "
        f"(m={t['m']}, n={t['n']}: {t['gru']:,} vs {t['lstm']:,} params); "
        f"time per step GRU/LSTM {time_ratio:.2f}; steps to solve GRU/LSTM {step_ratio:.2f}"
    )
    if fewer and time_ratio < 1 and step_ratio < 1:
        return "reproduced", measured
    if fewer and (time_ratio < 1 or step_ratio < 1):
        which = "fewer steps to solve" if step_ratio < 1 else "faster per step"
        return "reproduced under conditions", measured + f" (faster only as {which}, on this device)"
    return "not reproduced", measured
