"""C10: LSTM variants perform about the same (Greff et al. 2017): solve step per variant, same seeds."""

import shutil
from pathlib import Path

from gradflow.experiments.shared import config_run, settings

CRITERIA = {"max_slowdown": 2.0}


def run(out: Path, quick: bool) -> dict:
    run_dir, summary = config_run("lstm_variants", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c10.png")
    rows = settings(summary)
    return {"settings": rows, "figure": str(out / "c10.png"), "runs": [str(run_dir)]}


def _step(v):
    """A median solve step, or None when never solved (NaN here, null in claims.json)."""
    x = v["median_solved_step"]
    return None if x is None or x != x else x


def verdict(numbers: dict, criteria: dict):
    rows = numbers["settings"]
    base = _step(rows["vanilla"])
    same = {
        k: v["solved"] == v["seeds"]
        and None not in (_step(v), base)
        and _step(v) <= criteria["max_slowdown"] * base
        for k, v in rows.items()
    }
    measured = "; ".join(
        f"{k}: solved {v['solved']}/{v['seeds']}, median step "
        + ("never" if _step(v) is None else f"{_step(v):.0f}")
        for k, v in rows.items()
    )
    differ = [k for k, ok in same.items() if not ok]
    if not differ:
        return "reproduced", measured
    if len(differ) <= len(rows) // 2:
        return "reproduced under conditions", measured + f" (not about the same: {', '.join(differ)})"
    return "not reproduced", measured
