"""C12: bidirectional LSTMs use future context (lookahead task: the target is a later input)."""

import shutil
from pathlib import Path

from gradflow.experiments.shared import config_run, settings

CRITERIA = {"bidirectional_max_ratio": 0.3, "unidirectional_min_ratio": 0.9}


def run(out: Path, quick: bool) -> dict:
    run_dir, summary = config_run("bidirectional", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c12.png")
    rows = {
        label: {**row, "bidirectional": row["cell"] == "bidirectional"}
        for label, row in settings(summary).items()
    }
    return {"settings": rows, "figure": str(out / "c12.png"), "runs": [str(run_dir)]}


def verdict(numbers: dict, criteria: dict):
    rows = numbers["settings"]
    uni_ok = all(
        v["median_final_ratio"] >= criteria["unidirectional_min_ratio"]
        for v in rows.values()
        if not v["bidirectional"]
    )
    bi = {
        k: v["median_final_ratio"] <= criteria["bidirectional_max_ratio"]
        for k, v in rows.items()
        if v["bidirectional"]
    }
    measured = "; ".join(
        f"{k}: {v['median_final_ratio']:.3f} x baseline ({v['solved']}/{v['seeds']} solved)"
        for k, v in rows.items()
    )
    if uni_ok and bi and all(bi.values()):
        return "reproduced", measured
    if uni_ok and any(bi.values()):
        good = [k for k, ok in bi.items() if ok]
        return "reproduced under conditions", measured + f" (holds for: {', '.join(good)})"
    return "not reproduced", measured
