"""C3: vanilla tanh RNNs cannot learn long-distance dependencies, LSTM/GRU can (adding problem)."""

import shutil
from pathlib import Path

from gradflow.experiments.shared import config_run, settings

CRITERIA = {"gated_max_ratio": 0.1, "vanilla_min_ratio": 0.5}


def run(out: Path, quick: bool) -> dict:
    run_dir, summary = config_run("adding", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c03.png")
    rows = settings(summary)
    return {"settings": rows, "figure": str(out / "c03.png"), "runs": [str(run_dir)]}


def verdict(numbers: dict, criteria: dict):
    rows = numbers["settings"]
    gated = {k: v for k, v in rows.items() if k.startswith(("LSTM", "GRU"))}
    tanh = {k: v for k, v in rows.items() if k.startswith("tanh RNN")}
    gated_ok = all(
        v["solved"] == v["seeds"] and v["median_final_ratio"] <= criteria["gated_max_ratio"]
        for v in gated.values()
    )
    tanh_ok = all(
        v["solved"] == 0 and v["median_final_ratio"] >= criteria["vanilla_min_ratio"] for v in tanh.values()
    )
    measured = "; ".join(
        f"{k}: {v['median_final_ratio']:.3f} x baseline, solved {v['solved']}/{v['seeds']}"
        for k, v in rows.items()
    )
    return ("reproduced" if gated_ok and tanh_ok else "not reproduced"), measured
