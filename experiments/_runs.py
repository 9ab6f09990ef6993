"""Shared helpers of the claim experiments: run a shipped config once per report, read its numbers."""

import json
from pathlib import Path

import jax
import numpy as np

from gradflow import run_config

ROOT = Path(__file__).resolve().parents[1]


def config_run(name: str, out: Path, quick: bool, overrides=()) -> tuple[Path, dict]:
    """``gradflow run configs/<name>.yaml [--quick]`` into ``out/../runs/<name>`` (shared by claims:
    a second claim that needs the same run reuses it). Returns ``(run_dir, summary)``."""
    run_dir = Path(out).parent / "runs" / (name + ("_quick" if quick else ""))
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        run_config(ROOT / "configs" / f"{name}.yaml", run_dir, quick=quick, overrides=overrides, force=True)
    return run_dir, json.loads(summary_path.read_text())


def by_label(summary: dict) -> dict:
    """``{label (point): [runs]}`` of a training summary."""
    out: dict = {}
    for run in summary["runs"]:
        point = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in run["point"].items())
        out.setdefault(f"{run['label']} ({point})" if point else run["label"], []).append(run)
    return out


def median(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else float("nan")


def initial_params(trained):
    """The params a training run started from (``train_runs`` draws them from ``fold_in(seed, 0)``)."""
    key = jax.random.fold_in(jax.random.key(trained.run["seed"]), 0)
    return trained.model.init(key, trained.task.input_size)
