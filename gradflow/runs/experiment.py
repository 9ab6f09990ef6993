"""Run a config's sweep into a run directory: results, summary, figures.

Layout of ``DIR``: ``config.yaml`` (resolved), ``results.npz`` (per run:
log10 norms per carry part and in total, NaN-padded to the longest T),
``results.csv`` (tidy: one row per run x carry part x step), ``summary.json``
(fits per run, compile count, wall time, versions, device, git commit),
``decay.png``/``.svg``. Every file is written atomically. While a sweep runs,
finished groups (one compiled call each) are kept in ``DIR/.parts``, so the
same command after an interrupt resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import numpy as np

from gradflow import cells, figures, theory
from gradflow import config as cfgmod
from gradflow.engine import compile_cache, processes, sweep
from gradflow.measure.fit import finite_ends
from gradflow.rundir import PARTS, RunDirError, atomic_write, json_number, write_npz
from gradflow.runs import train_experiment
from gradflow.runs.configs import REGISTRIES as REGISTRIES
from gradflow.runs.configs import build_cell as build_cell
from gradflow.runs.configs import load_config as load_config
from gradflow.runs.layout import FIGURE_STEMS as FIGURE_STEMS
from gradflow.runs.layout import RESULT_FILES as RESULT_FILES
from gradflow.runs.layout import (
    load_parts,
    open_shared,
    result_files,
    shared_summary,
    unfinished,
    write_results,
)

__all__ = ["PARTS", "RunDirError", "atomic_write", "json_number", "plan", "run_config", "run_experiment"]


def plan(cfg: cfgmod.Config) -> list[dict]:
    """Groups of runs that share inputs and loss: one ``measure_runs`` call each.

    Each group: ``{"label", "cell", "inputs", "loss", "window", "runs": [...]}``
    with runs ``{"run_id", "label", "cell", "options", "point", "seed", "steps",
    "axis"}``; ``axis`` is ``"depth"`` for residual/plain stacks, else ``"time"``.
    """
    groups: dict = {}
    run_id = 0
    for point, pcfg in cfgmod.sweep_points(cfg, registries=REGISTRIES):
        for spec in pcfg.cells:
            steps, axis = _steps(spec, pcfg.inputs)
            key = (spec.label, spec.cell, pcfg.inputs, pcfg.loss, pcfg.fit.window)
            group = groups.setdefault(
                key,
                {
                    "label": spec.label,
                    "cell": spec.cell,
                    "inputs": pcfg.inputs,
                    "loss": pcfg.loss,
                    "window": pcfg.fit.window,
                    "runs": [],
                },
            )
            for seed in pcfg.sweep.seeds:
                group["runs"].append(
                    {
                        "run_id": run_id,
                        "label": spec.label,
                        "cell": spec.cell,
                        "options": dict(spec.options),
                        "point": dict(point),
                        "seed": int(seed),
                        "steps": steps,
                        "axis": axis,
                    }
                )
                run_id += 1
    return list(groups.values())


def _steps(spec: cfgmod.CellSpec, inputs: cfgmod.Inputs) -> tuple[int, str]:
    """``(T, axis)``: a stack's depth (its params' leading axis) or the sequence length."""
    cell = build_cell(spec)
    if not cell.params_per_step:
        return inputs.steps, "time"
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), None))
    return int(jax.tree_util.tree_leaves(shapes)[0].shape[0]), "depth"


COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class _CompileClock:
    """Seconds spent tracing, lowering and compiling while in the ``with`` block (wall time during
    which at least one of them ran: XLA compiles on a background thread while the next program is
    traced, ``devices.compile_ahead``), and the persistent compile cache's requests and hits
    meanwhile (``cache()``)."""

    def __init__(self):
        self._spans: list[tuple[float, float]] = []  # (start, end), time.perf_counter
        self._cache0 = compile_cache.stats()

    @property
    def seconds(self) -> float:
        """The length of the union of the compile events' spans so far."""
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self._spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def cache(self) -> dict:
        """``{"dir", "requests", "hits", "misses", "saved_s"}`` since the block began."""
        now, then = compile_cache.stats(), self._cache0
        return now | {k: round(now[k] - then[k], 3) for k in ("requests", "hits", "misses", "saved_s")}

    def __call__(self, event: str, duration: float, **_kwargs) -> None:
        if event in COMPILE_EVENTS:  # reported as it ends, on the thread that did it
            end = time.perf_counter()
            self._spans.append((end - duration, end))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def run_experiment(
    cfg: cfgmod.Config,
    out: Path,
    *,
    force: bool = False,
    progress=None,
    step_progress=None,
    should_stop=None,
    source: str | os.PathLike | None = None,
) -> dict:
    """Run every group of ``cfg`` into ``out``; return the summary dict (also in summary.json).

    ``progress(i, n, label, skipped)`` is called after each of the n groups. Training configs (with a
    ``task``) also call ``step_progress(i, n, label, step, steps)`` every ``train.eval_every`` steps and
    poll ``should_stop()`` there: True checkpoints the group and raises ``KeyboardInterrupt``.
    ``source`` is the config file: ``out`` may not contain it, and ``summary.json`` records the git
    commit of its checkout. ``out`` is protected as ``gradflow.rundir`` describes: ``force`` replaces
    only a directory gradflow wrote, and its old results stay until the new run finishes.
    """
    with _CompileClock() as clock:
        if cfg.task is not None:
            groups = train_experiment.plan(cfg)  # every sweep point is validated before the directory
            state = open_shared(Path(out), cfgmod.dump_config(cfg), force=force, protect=[source])
            return train_experiment.run_training(
                cfg, groups, Path(out), state, progress, step_progress, should_stop, clock, source
            )
        return _run(cfg, Path(out), force, progress, should_stop, clock, source)


def run_config(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    overrides=(),
    quick: bool = False,
    force: bool = False,
    progress=None,
    distributed: processes.Distributed | dict | bool | None = None,
) -> dict:
    """``gradflow run`` from Python: load the YAML config at ``path`` and run it into ``out``.

    ``path`` is a file or a shipped config's name (``"compare_cells"``; ``gradflow list`` shows them).
    ``overrides`` are ``"key.path=value"`` strings (``--set``); ``out`` defaults
    to the config's ``output.dir``. Returns the summary (also in ``out/summary.json``).
    ``force`` replaces a run directory gradflow wrote (never anything else; see ``gradflow.rundir``).
    ``distributed``: run over several processes (``gradflow.Distributed(coordinator, num_processes,
    process_id)``, or True to detect them from SLURM, Open MPI, Kubernetes or a TPU pod); call it in
    every process, before anything else runs on a device; process 0 writes ``out``, every process
    returns the same summary; a lost process raises ``ProcessError`` (one line).
    The persistent compile cache is enabled first, as ``gradflow run`` does, unless this process chose
    already (``gradflow.compile_cache.enable_once()``: on unless ``GRADFLOW_COMPILE_CACHE=0``).

    Example::

        summary = run_config("compare_cells", "/tmp/cc", quick=True)
        summary["settings"][0]["median_rate"]   # ln per step, tanh RNN
    """
    multi = processes.start(distributed)
    path = cfgmod.resolve_config(path)
    cfg = load_config(path, overrides, quick=quick)
    compile_cache.enable_once()
    try:
        return run_experiment(cfg, Path(out or cfg.output.dir), force=force, progress=progress, source=path)
    except Exception as err:
        if multi and processes.is_lost_peer(err):
            raise processes.ProcessError(processes.lost(str(err).splitlines()[0])) from None
        raise
    finally:
        compile_cache.warn_if_never_hits()


#: groups whose programs are traced, lowered and handed to XLA's background compile
#: (``sweep.prepare``) while the current group's program compiles and runs
LOOKAHEAD = 2


def _measure_args(group: dict) -> dict:
    """``sweep.measure_runs`` (and ``sweep.prepare``) arguments of a planned group."""
    runs = group["runs"]
    return {
        "cell_name": group["cell"],
        "options": [r["options"] for r in runs],
        "seeds": [r["seed"] for r in runs],
        "inputs": group["inputs"],
        "loss": group["loss"],
        "fit_window": group["window"],
    }


def _run(cfg, out, force, progress, should_stop, clock, source) -> dict:
    cfg_text = cfgmod.dump_config(cfg)
    groups = plan(cfg)  # every sweep point is validated before the directory is touched
    state = open_shared(out, cfg_text, force=force, protect=[source])  # None: not the writing process
    compiles, seconds0 = 0, clock.seconds
    todo = [g_idx for g_idx, _ in unfinished(out, groups)]
    try:
        for g_idx, group in enumerate(groups):
            if g_idx not in todo:
                if progress:
                    progress(g_idx, len(groups), group["label"], skipped=True)
                continue
            at = todo.index(g_idx)
            for ahead in todo[at : at + 1 + LOOKAHEAD]:  # their XLA compiles overlap this group's
                sweep.prepare(**_measure_args(groups[ahead]))
            part = out / PARTS / f"{g_idx}.npz"
            res, n = sweep.measure_runs(**_measure_args(group))
            compiles += n
            arrays = {
                "total_log10_norms": res.total_log10_norms,
                "total_rate": res.total_rate,
                "total_half_life": res.total_half_life,
                "total_r2": res.total_r2,
                "nonfinite_step": res.nonfinite_step,
            }
            for p in res.log10_norms:
                arrays[f"log10_norms/{p}"] = res.log10_norms[p]
                for field in ("rate", "half_life", "r2"):
                    arrays[f"{field}/{p}"] = getattr(res, field)[p]
            if state is not None:
                write_npz(part, arrays)
                state.attempts.update(compiles, clock.seconds - seconds0)
            if progress:
                progress(g_idx, len(groups), group["label"], skipped=False)
            if should_stop is not None and processes.any_process(should_stop()):
                raise KeyboardInterrupt(f"stopped after group {g_idx}")
    finally:
        if state is not None:
            state.attempts.update(compiles, clock.seconds - seconds0)
    if state is None:
        return shared_summary(None)
    state.manifest.record(*result_files(cfg))
    timing = state.attempts.totals() | {"compile_cache": clock.cache()}  # the cache: this attempt
    summary = _write_results(out, groups, timing, state.resumed, cfg, source)
    state.finish([*RESULT_FILES, *summary["figures"]])
    return shared_summary(summary)


def _write_results(out: Path, groups, timing, resumed, cfg, source) -> dict:
    runs, parts_data = load_parts(out, groups)
    t_max = max(r["steps"] for r in runs)
    n = len(runs)
    parts = sorted({k.split("/", 1)[1] for d in parts_data for k in d if k.startswith("log10_norms/")})
    arrays = {
        "run_id": np.array([r["run_id"] for r in runs]),
        "seed": np.array([r["seed"] for r in runs]),
        "steps": np.array([r["steps"] for r in runs]),
        "label": np.array([r["label"] for r in runs]),
    }
    arrays["total_log10_norms"] = np.full((n, t_max + 1), np.nan, np.float32)
    for p in parts:
        arrays[f"log10_norms_{p}"] = np.full((n, t_max + 1), np.nan, np.float32)
    fits = []
    resolved = [{**cells.options(r["cell"]), **r["options"]} for r in runs]  # every option, defaults filled
    row = 0
    for group, data in zip(groups, parts_data, strict=True):
        for i, run in enumerate(group["runs"]):
            t1 = run["steps"] + 1
            arrays["total_log10_norms"][row, :t1] = data["total_log10_norms"][i]
            fit = {"total": {f: float(data[f"total_{f}"][i]) for f in ("rate", "half_life", "r2")}}
            for p in parts:
                if f"log10_norms/{p}" in data:
                    arrays[f"log10_norms_{p}"][row, :t1] = data[f"log10_norms/{p}"][i]
                    fit[p] = {f: float(data[f"{f}/{p}"][i]) for f in ("rate", "half_life", "r2")}
            first, last = finite_ends(data["total_log10_norms"][i])  # an exact zero (-inf) is left out
            fit["log10_first_last_ratio"] = first - last
            fit["nonfinite_step"] = int(data["nonfinite_step"][i])
            fit["theory_rate"] = json_number(theory.predicted_rate(run["cell"], resolved[row]))
            fits.append(fit)
            row += 1
    for key in [k for k in arrays if "log10_norms" in k]:
        arrays[key.replace("log10_norms", "norms")] = np.power(10.0, arrays[key].astype(np.float64))
    runs = [r | {"cell_options": o, "fit": f} for r, o, f in zip(runs, resolved, fits, strict=True)]
    curves = figures.curves(runs, arrays)
    run = figures.Run(cfg.name, runs, arrays, {k: list(v) for k, v in cfg.sweep.grid.items()})
    drawn = figures.draw([run], out, cfg.output.formats)
    settings = [
        {
            "label": c["label"],
            "median_rate": c["rate"],
            "median_half_life": c["half_life"],
            "median_log10_first_last_ratio": c["ratio"],
            "theory_rate": json_number(c["theory_rate"]),
            "seeds": c["seeds"],
        }
        for c in curves
    ]

    def rows(i, run):  # per carry part and step: t, steps back, log10 ||dL/dh_t||
        T = run["steps"]
        for p in ["total", *parts]:
            log10 = arrays["total_log10_norms" if p == "total" else f"log10_norms_{p}"][i]
            yield from ([p, t, T - t, f"{log10[t]:.6g}"] for t in range(T + 1))

    return write_results(
        out,
        cfg,
        runs=runs,
        arrays=arrays,
        columns=("part", "t", "steps_back", "log10_norm"),
        rows=rows,
        settings=settings,
        drawn=drawn,
        timing=timing,
        resumed=resumed,
        source=source,
    )
