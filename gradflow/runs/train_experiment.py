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

import json
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from flax import serialization

from gradflow import cells
from gradflow import config as cfgmod
from gradflow.engine import training
from gradflow.engine.sweep import DYNAMIC_OPTIONS
from gradflow.learn import tasks
from gradflow.rundir import PARTS, atomic_write, write_npz
from gradflow.runs.configs import REGISTRIES, load_config
from gradflow.runs.layout import RESULT_FILES, result_files, shared_summary, unfinished
from gradflow.runs.train_results import _write_results

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


def run_training(
    cfg, groups: list[dict], out: Path, state, progress, step_progress, should_stop, clock, source
) -> dict:
    """Train ``groups`` (``plan(cfg)``) into the run directory ``out``, opened as ``state``
    (``layout.open_shared``; None on a process that does not write)."""
    trained, seconds0 = [], clock.seconds  # the groups compiled and trained in this attempt
    try:
        for g_idx in _train_groups(groups, out, state is not None, progress, step_progress, should_stop):
            trained.append(g_idx)
            if state is not None:
                state.attempts.update(len(trained), clock.seconds - seconds0)
    finally:
        if state is not None:
            state.attempts.update(len(trained), clock.seconds - seconds0)
    if state is None:
        return shared_summary(None)
    params = [f"params/{g_idx}.msgpack" for g_idx in range(len(groups))]
    state.manifest.record(*result_files(cfg), *params)
    (out / "params").mkdir(exist_ok=True)
    for g_idx in range(len(groups)):
        if (out / PARTS / f"{g_idx}.msgpack").exists():
            (out / PARTS / f"{g_idx}.msgpack").replace(out / "params" / f"{g_idx}.msgpack")
    timing = state.attempts.totals() | {"compile_cache": clock.cache()}  # the cache: this attempt
    summary = _write_results(out, groups, timing, state.resumed, cfg, source)
    state.finish([*RESULT_FILES, *params, *summary["figures"]])
    return shared_summary(summary)


def _train_groups(groups, out, writes, progress, step_progress, should_stop):
    """Train each group not yet in ``out/.parts``; yield its index once its results are written
    (``writes``: this process writes them)."""
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
        if writes:
            atomic_write(out / PARTS / f"{g_idx}.msgpack", serialization.to_bytes(res.params))
            write_npz(part, arrays)
            (out / PARTS / f"{g_idx}.ckpt").unlink(missing_ok=True)
        yield g_idx
        if progress:
            progress(g_idx, len(groups), group["label"], skipped=False)


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
