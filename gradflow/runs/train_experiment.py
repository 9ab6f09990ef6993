"""Run a training config (one with a ``task``) into a run directory.

Layout of ``DIR`` (the measurement layout, for training):

- ``config.yaml``: the resolved config;
- ``results.npz``: per run (leading axis N, NaN-padded): ``train_loss``, ``grad_norm``,
  ``clipped`` ``[N, steps]``; ``eval_step``, ``eval_loss``, ``eval_accuracy``, ``flow_rate``,
  ``flow_half_life``, ``flow_r2`` ``[N, E]``; ``flow_total_log10`` and ``flow_log10_<part>``
  ``[N, E, T+1]`` (log10 ``||dL/dh_t||`` of the training loss at ``eval_step``); ``gate_<g>_<stat>``
  ``[N, E]``; ``baseline [N]``;
- ``results.csv``: tidy, one row per run x evaluation;
- ``summary.json``: per run the final held-out loss against the baseline, solved (and at which step),
  diverged (and at which step), clipped fraction, loss spikes, time per step, parameter count; per
  setting the medians over seeds; compiles, compile and wall time, versions, device, git commit;
- ``params/<group>.msgpack``: the trained params of each compiled group (flax msgpack, leaves with a
  leading run axis); ``summary.json`` names each run's file and row, ``load_trained`` restores them;
- figures ``learning``, ``flow_heatmap``, ``flow_rate`` (and ``gates`` for gated cells).

While it runs, each group's checkpoint (params, optimizer state, histories; flax msgpack) is in
``DIR/.parts``: the same command after a kill resumes from it and ends with the same numbers.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from flax import serialization

from gradflow import cells, figures
from gradflow import config as cfgmod
from gradflow.engine import training
from gradflow.engine.sweep import DYNAMIC_OPTIONS
from gradflow.learn import tasks
from gradflow.measure.fit import finite_ends
from gradflow.rundir import PARTS, atomic_write, json_number, provenance, setting_key, write_npz
from gradflow.runs.configs import REGISTRIES, load_config
from gradflow.runs.layout import RESULT_FILES, load_parts, result_files, unfinished

LAST_STEP_TASKS = ("adding", "temporal_order")  # tasks scored at the last step only


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def readout_for(cfg_train: cfgmod.Train, task_name: str) -> str:
    """'last' or 'every' ('auto': last for tasks scored at the last step)."""
    if cfg_train.readout != "auto":
        return cfg_train.readout
    return "last" if task_name in LAST_STEP_TASKS else "every"


def plan(cfg: cfgmod.Config) -> list[dict]:
    """Groups of runs that share one compiled train step.

    Runs differing only in seed, ``train.learning_rate``, ``train.clip`` or scalar init options
    (``forget_bias``, ``weight_scale``, ...) share a group. Each group: ``{"label", "cell", "static",
    "dynamic", "task", "train", "runs"}``; runs: ``{"run_id", "label", "cell", "options", "point",
    "seed", "learning_rate", "clip"}``.
    """
    groups: dict = {}
    run_id = 0
    for point, pcfg in cfgmod.sweep_points(cfg, registries=REGISTRIES):
        shared_train = replace(pcfg.train, learning_rate=1.0, clip=None)
        for spec in pcfg.cells:
            options = dict(spec.options)
            dynamic = tuple(
                sorted(k for k in options if k in DYNAMIC_OPTIONS and isinstance(options[k], float))
            )
            static = tuple(sorted((k, v) for k, v in options.items() if k not in dynamic))
            key = (spec.cell, _freeze(dict(static)), dynamic, pcfg.task, shared_train)
            group = groups.setdefault(
                key,
                {
                    "labels": [],
                    "cell": spec.cell,
                    "static": dict(static),
                    "dynamic": dynamic,
                    "task": pcfg.task,
                    "train": pcfg.train,
                    "runs": [],
                },
            )
            if spec.label not in group["labels"]:
                group["labels"].append(spec.label)
            for seed in pcfg.sweep.seeds:
                group["runs"].append(
                    {
                        "run_id": run_id,
                        "label": spec.label,
                        "cell": spec.cell,
                        "options": options,
                        "point": dict(point),
                        "seed": int(seed),
                        "learning_rate": pcfg.train.learning_rate,
                        "clip": pcfg.train.clip,
                    }
                )
                run_id += 1
    out = list(groups.values())
    for g in out:
        g["label"] = ", ".join(g["labels"])
    return out


def _make_model(group: dict, task):
    readout = readout_for(group["train"], task.name)
    bidirectional = group["cell"] == "bidirectional"
    dropout = group["cell"] == "stacked" and (group["static"].get("dropout") or 0.0) > 0.0

    def make(dynamic: dict) -> training.Model:
        cell = cells.get(group["cell"], **group["static"], **dynamic)
        return training.Model(
            cell, task.output_size, readout=readout, bidirectional=bidirectional, dropout=dropout
        )

    return make


def run_training(cfg, groups: list[dict], state, progress, step_progress, should_stop, clock, source) -> dict:
    """Train ``groups`` (``plan(cfg)``) into the run directory ``state`` (``rundir.open_run``)."""
    out = state.root
    trained, seconds0 = [], clock.seconds  # the groups compiled and trained in this attempt
    try:
        for g_idx in _train_groups(groups, out, progress, step_progress, should_stop):
            trained.append(g_idx)
            state.attempts.update(len(trained), clock.seconds - seconds0)
    finally:
        state.attempts.update(len(trained), clock.seconds - seconds0)
    params = [f"params/{g_idx}.msgpack" for g_idx in range(len(groups))]
    state.manifest.record(*result_files(cfg), *params)
    (out / "params").mkdir(exist_ok=True)
    for g_idx in range(len(groups)):
        if (out / PARTS / f"{g_idx}.msgpack").exists():
            (out / PARTS / f"{g_idx}.msgpack").replace(out / "params" / f"{g_idx}.msgpack")
    timing = state.attempts.totals() | {"compile_cache": clock.cache()}  # the cache: this attempt
    summary = _write_results(out, groups, timing, state.resumed, cfg, source)
    state.finish([*RESULT_FILES, *params, *summary["figures"]])
    return summary


def _train_groups(groups, out, progress, step_progress, should_stop):
    """Train each group not yet in ``out/.parts``; yield its index once its results are written."""
    for g_idx, group in unfinished(out, groups, progress):
        part = out / PARTS / f"{g_idx}.npz"
        task = tasks.get(group["task"].name, **group["task"].options)
        train = group["train"]

        def steps_done(step, steps, _label=group["label"], _g=g_idx):
            if step_progress:
                step_progress(_g, len(groups), _label, step, steps)

        res = training.train_runs(
            _make_model(group, task),
            task,
            train,
            [{**r, "options": {k: r["options"][k] for k in group["dynamic"]}} for r in group["runs"]],
            option_names=group["dynamic"],
            checkpoint=out / PARTS / f"{g_idx}.ckpt",
            checkpoint_every=train.checkpoint_every,
            progress=steps_done,
            should_stop=should_stop,
        )
        arrays = {k: v for k, v in res._asdict().items() if isinstance(v, np.ndarray)}
        for p, v in res.flow_log10.items():
            arrays[f"flow_log10/{p}"] = v
        for g, v in res.gates.items():
            arrays[f"gates/{g}"] = v
        for k in ("param_count", "compile_s", "step_time_s"):
            arrays[k] = np.asarray(getattr(res, k))
        arrays["baseline"] = np.asarray(task.baseline)
        atomic_write(out / PARTS / f"{g_idx}.msgpack", serialization.to_bytes(res.params))
        write_npz(part, arrays)
        (out / PARTS / f"{g_idx}.ckpt").unlink(missing_ok=True)
        yield g_idx
        if progress:
            progress(g_idx, len(groups), group["label"], skipped=False)


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
    write_npz(out / "results.npz", arrays)
    _write_csv(out, results, arrays)
    run = figures.Run(
        cfg.name, results, arrays, {k: list(v) for k, v in cfg.sweep.grid.items()}, kind="train"
    )
    drawn = figures.draw([run], out, cfg.output.formats)
    summary = {
        "name": cfg.name,
        "kind": "train",
        "task": {"name": cfg.task.name, "options": dict(cfg.task.options)},
        "runs": results,
        "settings": settings,
        "figures": [p.name for p in drawn],
        **timing,
        "resumed": resumed,
        **provenance(source),
    }
    atomic_write(out / "config.yaml", cfgmod.dump_config(cfg).encode())
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    return summary


class Trained(NamedTuple):
    """One trained run of a run directory: its ``summary.json`` entry, its ``Model`` and ``params``."""

    run: dict
    model: training.Model
    params: dict
    task: object


def load_trained(run_dir) -> list[Trained]:
    """The trained runs of a training run directory, in ``summary.json`` order.

    Rebuilds each group's model from ``config.yaml`` and restores ``params/<group>.msgpack``; a run's
    params are its row. Example::

        lstm = [t for t in load_trained("runs/adding") if t.run["cell"] == "lstm"][0]
        outputs = lstm.model.apply(lstm.params, xs)   # xs: [T, B, I] -> [T, B, O]
    """
    import jax

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    groups = plan(load_config(run_dir / "config.yaml"))
    out = []
    for g_idx, group in enumerate(groups):
        task = tasks.get(group["task"].name, **group["task"].options)
        make = _make_model(group, task)
        R = len(group["runs"])  # runs of a group share shapes: restore the group's file once
        probe = make({k: group["runs"][0]["options"][k] for k in group["dynamic"]})
        shapes = jax.eval_shape(lambda m=probe, n=task.input_size: m.init(jax.random.key(0), n))
        target = jax.tree_util.tree_map(lambda a, n=R: np.zeros((n, *a.shape), a.dtype), shapes)
        stacked = serialization.from_bytes(target, (run_dir / "params" / f"{g_idx}.msgpack").read_bytes())
        for i, run in enumerate(group["runs"]):
            model = make({k: run["options"][k] for k in group["dynamic"]})
            params = jax.tree_util.tree_map(lambda a, row=i: a[row], stacked)
            entry = summary["runs"][len(out)]  # summary.json lists the runs group by group
            if entry["run_id"] != run["run_id"] or entry["params_row"] != i:
                raise ValueError(f"{run_dir}: summary.json does not match config.yaml (run {len(out)})")
            out.append(Trained(entry, model, params, task))
    return out


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


def _write_csv(out: Path, results: list[dict], arrays: dict) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    point_keys = sorted({k for r in results for k in r["point"]})
    writer.writerow(
        [
            "run_id",
            "label",
            "cell",
            "seed",
            *point_keys,
            "step",
            "eval_loss",
            "eval_accuracy",
            "train_loss",
            "flow_rate",
            "baseline",
        ]
    )
    for i, run in enumerate(results):
        point = [run["point"].get(k, "") for k in point_keys]
        for e, step in enumerate(arrays["eval_step"][i]):
            if not np.isfinite(step) or not np.isfinite(arrays["eval_loss"][i, e]):
                continue
            s = int(step)
            train = arrays["train_loss"][i, s] if s < arrays["train_loss"].shape[1] else np.nan
            writer.writerow(
                [
                    run["run_id"],
                    run["label"],
                    run["cell"],
                    run["seed"],
                    *point,
                    s,
                    f"{arrays['eval_loss'][i, e]:.6g}",
                    f"{arrays['eval_accuracy'][i, e]:.6g}",
                    f"{train:.6g}",
                    f"{arrays['flow_rate'][i, e]:.6g}",
                    f"{run['baseline']:.6g}",
                ]
            )
    atomic_write(out / "results.csv", buf.getvalue().encode())
