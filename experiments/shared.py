"""Shared helpers of the claim experiments: run a shipped config once per report, read its numbers."""

import json
from pathlib import Path

import jax
import numpy as np

from gradflow import run_config
from gradflow.rundir import setting_key


def config_run(name: str, out: Path, quick: bool, overrides=()) -> tuple[Path, dict]:
    """``gradflow run <name> [--quick]`` (a shipped config) into ``out/../runs/<name>`` (shared by claims:
    a second claim that needs the same run reuses it). Returns ``(run_dir, summary)``."""
    run_dir = Path(out).parent / "runs" / (name + ("_quick" if quick else ""))
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        run_config(name, run_dir, quick=quick, overrides=overrides, force=True)
    return run_dir, json.loads(summary_path.read_text())


def by_label(summary: dict) -> dict:
    """``{setting (label and sweep point): [runs]}`` of a training summary."""
    out: dict = {}
    for run in summary["runs"]:
        out.setdefault(setting_key(run), []).append(run)
    return out


def settings(summary: dict) -> dict:
    """``{setting: row}`` from a training summary's per-setting medians over seeds: ``cell``,
    ``median_final_ratio``, ``solved`` (runs), ``seeds`` (count), ``median_solved_step`` (None:
    never), ``params``."""
    return {
        s["label"]: {
            "cell": s["cell"],
            "median_final_ratio": s["median_final_ratio"],
            "solved": s["solved"],
            "seeds": len(s["seeds"]),
            "median_solved_step": s["median_solved_step"],
            "params": s["param_count"],
        }
        for s in summary["settings"]
    }


def median(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else float("nan")


def initial_params(trained):
    """The params a training run started from (``train_runs`` draws them from ``fold_in(seed, 0)``)."""
    key = jax.random.fold_in(jax.random.key(trained.run["seed"]), 0)
    return trained.model.init(key, trained.task.input_size)
