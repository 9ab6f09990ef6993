"""C13: trained LSTMs/GRUs retain state longer: the decay rate of ||dL/dh_t|| (and its half-life)
at the first and the last record of training on the adding problem, per cell and seed.

(The top Lyapunov exponent before/after training needs the trained params in the run directory;
not yet: the gradient half-life is the measured quantity here.)
"""

import math
import shutil
from pathlib import Path

from _runs import by_label, config_run, median

CRITERIA = {"min_rate_gain": 0.02}  # ln/step: the rate must rise by at least this much


def _half_life(rate):
    return math.inf if rate is None or rate >= 0 else math.log(2) / -rate


def run(out: Path, quick: bool) -> dict:
    run_dir, summary = config_run("adding", out, quick)
    shutil.copy(run_dir / "flow_rate.png", out / "c13.png")
    rows = {}
    for label, runs in by_label(summary).items():
        first = median(r["flow_rate_first"] for r in runs)
        last = median(r["flow_rate_last"] for r in runs)
        rows[label] = {
            "cell": runs[0]["cell"],
            "rate_before": first,
            "rate_after": last,
            "half_life_before": _half_life(first),
            "half_life_after": _half_life(last),
            "solved": sum(r["solved"] for r in runs),
            "seeds": len(runs),
        }
    return {"settings": rows, "figure": str(out / "c13.png"), "runs": [str(run_dir)]}


def verdict(numbers: dict, criteria: dict):
    rows = numbers["settings"]
    gated = {k: v for k, v in rows.items() if v["cell"] in ("lstm", "gru")}
    longer = {k: v["rate_after"] - v["rate_before"] >= criteria["min_rate_gain"] for k, v in gated.items()}
    measured = "; ".join(
        f"{k}: rate {v['rate_before']:+.3f} -> {v['rate_after']:+.3f} ln/step "
        f"(half-life {v['half_life_before']:.3g} -> {v['half_life_after']:.3g} steps)"
        for k, v in rows.items()
    )
    if longer and all(longer.values()):
        return "reproduced", measured
    if any(longer.values()):
        return "reproduced under conditions", measured
    return "not reproduced", measured
