"""C4: exploding gradients make training unstable; clipping by global norm fixes it."""

import shutil
from pathlib import Path

from gradflow.experiments.shared import config_run

CRITERIA = {"clipped_solved_fraction": 1.0, "unclipped_failed_fraction": 1.0}


def run(out: Path, quick: bool) -> dict:
    run_dir, summary = config_run("clipping", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c04.png")
    rows = [
        {
            k: r[k]
            for k in (
                "seed",
                "clip",
                "solved",
                "solved_step",
                "diverged",
                "diverged_step",
                "loss_spikes",
                "final_ratio",
                "clipped_fraction",
                "max_train_loss",
            )
        }
        for r in summary["runs"]
    ]
    return {"runs_table": rows, "figure": str(out / "c04.png"), "runs": [str(run_dir)]}


def verdict(numbers: dict, criteria: dict):
    rows = numbers["runs_table"]
    off = [r for r in rows if r["clip"] is None]
    on = [r for r in rows if r["clip"] is not None]
    failed = [r for r in off if r["diverged"] or (r["loss_spikes"] > 0 and not r["solved"])]
    solved = [r for r in on if r["solved"] and not r["diverged"]]
    measured = (
        f"without clipping {sum(r['diverged'] for r in off)}/{len(off)} diverged, "
        f"{len(failed)}/{len(off)} diverged or spiked unsolved; "
        f"with clip {on[0]['clip'] if on else '-'}: {len(solved)}/{len(on)} solved"
    )
    ok = len(failed) >= criteria["unclipped_failed_fraction"] * len(off)
    ok = ok and len(solved) >= criteria["clipped_solved_fraction"] * len(on)
    return ("reproduced" if ok else "not reproduced"), measured
