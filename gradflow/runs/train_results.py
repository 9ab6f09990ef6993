"""The results of a training run directory, written from its groups' parts once every group is trained.

``results.npz`` (one row per run, NaN-padded), ``results.csv`` (one row per run x evaluation),
``summary.json`` (per run and per setting) and the figures; the layout is in
``gradflow.runs.train_experiment``'s docstring.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from gradflow import figures
from gradflow.engine import training
from gradflow.measure.fit import finite_ends
from gradflow.rundir import json_number, setting_key
from gradflow.runs.layout import load_parts, write_results


def _pad(values: list[np.ndarray], fill) -> np.ndarray:
    """Stack ``[n_i, ...]`` arrays of different trailing lengths, padded with ``fill``."""
    shape = [max(v.shape[d] for v in values) for d in range(1, values[0].ndim)]
    out = np.full((sum(v.shape[0] for v in values), *shape), fill, values[0].dtype)
    row = 0
    for v in values:
        out[(slice(row, row + v.shape[0]), *(slice(0, s) for s in v.shape[1:]))] = v
        row += v.shape[0]
    return out


def _last_evaluated(values: np.ndarray) -> float:
    """The last evaluation (NaN: not evaluated); inf where a diverged run's params score inf."""
    done = values[~np.isnan(values)]
    return float(done[-1]) if done.size else float("nan")


def _write_results(out: Path, groups, timing, resumed, cfg, source) -> dict:
    runs, parts = load_parts(out, groups)
    n = len(runs)
    per_run = lambda key, fill=np.nan: _pad([d[key] for d in parts], fill)  # noqa: E731
    arrays = {
        "run_id": np.array([r["run_id"] for r in runs]),
        "seed": np.array([r["seed"] for r in runs]),
        "label": np.array([r["label"] for r in runs]),
        "learning_rate": np.array([r["learning_rate"] for r in runs], np.float64),
        "clip": np.array([np.inf if r["clip"] is None else r["clip"] for r in runs], np.float64),
        "baseline": np.concatenate(
            [np.full(len(g["runs"]), d["baseline"]) for g, d in zip(groups, parts, strict=True)]
        ),
        "train_loss": per_run("train_loss"),
        "grad_norm": per_run("grad_norm"),
        "clipped": per_run("clipped", False),
        "eval_loss": per_run("eval_loss"),
        "eval_accuracy": per_run("eval_accuracy"),
        "flow_rate": per_run("flow_rate"),
        "flow_half_life": per_run("flow_half_life"),
        "flow_r2": per_run("flow_r2"),
        "flow_total_log10": per_run("flow_total_log10"),
    }
    e_max = arrays["eval_loss"].shape[1]
    arrays["eval_step"] = _pad(
        [
            np.tile(d["eval_step"].astype(np.float64), (len(g["runs"]), 1))
            for g, d in zip(groups, parts, strict=True)
        ],
        np.nan,
    )
    for key in sorted({k for d in parts for k in d if k.startswith(("flow_log10/", "gates/"))}):
        name = key.replace("flow_log10/", "flow_log10_").replace("gates/", "gate_").replace("/", "_")
        blocks = []
        for d in parts:
            if key in d:
                blocks.append(d[key])
            else:
                like = d["flow_total_log10"] if key.startswith("flow") else d["eval_loss"]
                blocks.append(np.full(like.shape, np.nan, np.float32))
        arrays[name] = _pad(blocks, np.nan)
    assert arrays["eval_loss"].shape == (n, e_max)

    results, row = [], 0
    for g_idx, (group, d) in enumerate(zip(groups, parts, strict=True)):
        R = len(group["runs"])
        step_time = float(d["step_time_s"])
        for i, run in enumerate(group["runs"]):
            base = float(d["baseline"])
            ev = d["eval_loss"][i]
            steps_run = int(d["steps_run"][i])
            loss = d["train_loss"][i]
            final = _last_evaluated(ev)
            solved_step, diverged_step = int(d["solved_step"][i]), int(d["diverged_step"][i])
            rate_first, rate_last = finite_ends(d["flow_rate"][i])
            results.append(
                run
                | {
                    "baseline": base,
                    "solved_threshold": group["train"].solved_fraction * base,
                    "final_eval_loss": json_number(final),
                    "final_ratio": json_number(final / base),
                    "best_eval_loss": json_number(
                        float(np.min(ev[np.isfinite(ev)])) if np.isfinite(ev).any() else np.nan
                    ),
                    "final_eval_accuracy": json_number(_last_evaluated(d["eval_accuracy"][i])),
                    "solved": solved_step >= 0,
                    "solved_step": solved_step if solved_step >= 0 else None,
                    "diverged": diverged_step >= 0,
                    "diverged_step": diverged_step if diverged_step >= 0 else None,
                    "steps_run": steps_run,
                    "clipped_fraction": float(d["clipped"][i].sum() / max(steps_run, 1)),
                    "loss_spikes": training.loss_spikes(loss, base),
                    "max_train_loss": json_number(
                        float(np.max(loss[np.isfinite(loss)])) if np.isfinite(loss).any() else np.nan
                    ),
                    "flow_rate_first": json_number(rate_first),
                    "flow_rate_last": json_number(rate_last),
                    "param_count": int(d["param_count"]),
                    "time_per_step_s": step_time / R,
                    "group_step_time_s": step_time,
                    "group_runs": R,
                    "params_file": f"params/{g_idx}.msgpack",
                    "params_row": i,
                }
            )
            row += 1
    settings = _settings(results, cfg)
    run = figures.Run(
        cfg.name, results, arrays, {k: list(v) for k, v in cfg.sweep.grid.items()}, kind="train"
    )
    drawn = figures.draw([run], out, cfg.output.formats)
    return write_results(
        out,
        cfg,
        kind="train",
        task={"name": cfg.task.name, "options": dict(cfg.task.options)},
        runs=results,
        arrays=arrays,
        columns=("step", "eval_loss", "eval_accuracy", "train_loss", "flow_rate", "baseline"),
        rows=functools.partial(_csv_rows, arrays),
        settings=settings,
        drawn=drawn,
        timing=timing,
        resumed=resumed,
        source=source,
    )


def _settings(results: list[dict], cfg) -> list[dict]:
    by: dict = {}
    for r in results:
        by.setdefault(setting_key(r), []).append(r)
    out = []
    for label, rs in by.items():
        ratios = [r["final_ratio"] for r in rs if r["final_ratio"] is not None]
        solved = [r["solved_step"] for r in rs if r["solved"]]
        out.append(
            {
                "label": label,
                "cell": rs[0]["cell"],
                "point": rs[0]["point"],
                "seeds": [r["seed"] for r in rs],
                "median_final_ratio": float(np.median(ratios)) if ratios else None,
                "solved": sum(r["solved"] for r in rs),
                "median_solved_step": float(np.median(solved)) if solved else None,
                "diverged": sum(r["diverged"] for r in rs),
                "median_clipped_fraction": float(np.median([r["clipped_fraction"] for r in rs])),
                "loss_spikes": int(sum(r["loss_spikes"] for r in rs)),
                "param_count": rs[0]["param_count"],
                "time_per_step_s": float(np.median([r["time_per_step_s"] for r in rs])),
                "baseline": rs[0]["baseline"],
            }
        )
    return out


def _csv_rows(arrays: dict, i: int, run: dict):
    """Run i's ``results.csv`` values, one row per evaluation: step, eval loss and accuracy, the
    training loss at that step, the flow rate, the task's baseline."""
    for e, step in enumerate(arrays["eval_step"][i]):
        if not np.isfinite(step) or not np.isfinite(arrays["eval_loss"][i, e]):
            continue
        s = int(step)
        train = arrays["train_loss"][i, s] if s < arrays["train_loss"].shape[1] else np.nan
        yield [
            s,
            f"{arrays['eval_loss'][i, e]:.6g}",
            f"{arrays['eval_accuracy'][i, e]:.6g}",
            f"{train:.6g}",
            f"{arrays['flow_rate'][i, e]:.6g}",
            f"{run['baseline']:.6g}",
        ]
