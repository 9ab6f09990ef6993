"""The figures of a run directory, drawn from its files alone.

``gradflow run`` and ``gradflow plot`` both call `draw`, so every figure can be
regenerated from ``results.npz`` + ``summary.json`` + ``config.yaml``:

- ``decay``: ``||dL/dh_t||`` against steps back (recurrent cells) and, in a
  second panel, against the layer (residual/plain stacks); median and band over
  seeds, fitted rate in the legend. With a 2-D grid only the slice at the first
  value of the second key is drawn (the heatmap shows the rest).
- ``paths``: LSTM cell-state path against hidden path, one panel per setting.
- ``phase``: for a 2-D sweep grid, the median rate per grid point as a heatmap,
  one panel per cell, with the measured edge (rate = 0) drawn.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from gradflow import theory
from gradflow.figures import plots, training

NAMES = ("decay", "paths", "phase")  # figure file stems
MAX_LINES = 12  # more curves than this on one axes are unreadable: the legend goes outside


class RunFilesError(ValueError):
    """A run directory is missing files or has unreadable ones (one-line message)."""


@dataclass
class Run:
    """What the figures need from one run directory."""

    name: str
    runs: list  # summary["runs"]: label, cell, point, seed, steps, axis, fit
    arrays: dict  # results.npz
    grid: dict  # config sweep.grid: key path -> values (file order)
    figures: tuple = ()  # summary["figures"]: the figure files the run wrote
    kind: str = "measure"  # summary["kind"]: "measure" (gradflow run on cells) or "train" (a task)
    path: Path | None = None  # the run directory it was loaded from (names it in overlays)


def load(run_dir: str | Path) -> Run:
    """Read ``summary.json``, ``results.npz`` and ``config.yaml`` of a finished run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFilesError(f"{run_dir}: not a run directory (no such directory)")
    files = {name: run_dir / name for name in ("summary.json", "results.npz", "config.yaml")}
    for name, path in files.items():
        if not path.is_file():
            raise RunFilesError(f"{run_dir}: no {name}; is it a finished `gradflow run` directory?")
    try:
        summary = json.loads(files["summary.json"].read_text())
        with np.load(files["results.npz"]) as data:
            arrays = {k: data[k] for k in data.files}
        config = yaml.safe_load(files["config.yaml"].read_text())
        grid = dict((config.get("sweep") or {}).get("grid") or {})
        runs = summary["runs"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as err:
        raise RunFilesError(f"{run_dir}: cannot read the run files ({type(err).__name__}: {err})") from None
    kind = summary.get("kind", "measure")
    main = "train_loss" if kind == "train" else "total_log10_norms"
    if arrays.get(main, np.zeros((0, 0))).shape[0] != len(runs):
        raise RunFilesError(f"{run_dir}: results.npz and summary.json disagree on the number of runs")
    name = summary.get("name", run_dir.name)
    return Run(name, runs, arrays, grid, tuple(summary.get("figures", ())), kind, run_dir)


def curves(
    runs: list, arrays: dict, *, part: str = "total", prefix: str = "", keep=None, fixed=()
) -> list[dict]:
    """One curve per (label, sweep point): seeds stacked, median fits.

    Returns ``[{"label", "axis", "log10_norms": [S, T+1], "rate", "half_life",
    "ratio", "seeds", "rows"}]`` in first-appearance order; ``part`` picks
    ``total`` or a carry part (``c``, ``h``, ...). Runs without that part, and
    runs for which ``keep(run)`` is false, are left out; sweep keys in ``fixed``
    are left out of the labels.
    """
    key = "total_log10_norms" if part == "total" else f"log10_norms_{part}"
    if key not in arrays:
        return []
    groups: dict = {}
    for i, run in enumerate(runs):
        if keep is not None and not keep(run):
            continue
        if not np.any(np.isfinite(arrays[key][i]) | np.isneginf(arrays[key][i])):
            continue  # this run has no such carry part
        point = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in run["point"].items() if k not in fixed)
        label = prefix + run["label"] + (f" ({point})" if point else "")
        groups.setdefault(label, []).append(i)
    out = []
    for label, rows in groups.items():
        t1 = runs[rows[0]]["steps"] + 1
        fit = lambda f, rows=rows: float(np.median([_fit(runs[i], part, f) for i in rows]))  # noqa: E731
        out.append(
            {
                "label": label,
                "axis": runs[rows[0]].get("axis", "time"),
                "log10_norms": arrays[key][rows, :t1],
                "rate": fit("rate"),
                "half_life": fit("half_life"),
                "ratio": float(np.median([runs[i]["fit"]["log10_first_last_ratio"] for i in rows])),
                "theory_rate": _median_theory([runs[i] for i in rows]),
                "seeds": len(rows),
                "rows": rows,
            }
        )
    return out


def _median_theory(runs: list) -> float:
    """Median predicted rate over seeds (NaN where no theory applies; the same for every seed)."""
    values = [r["fit"].get("theory_rate") for r in runs]
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


def _fit(run: dict, part: str, field: str) -> float:
    value = run["fit"].get(part, {}).get(field)
    return float("nan") if value is None else float(value)


def draw(run_list: list[Run], out: str | Path, formats=("png", "svg")) -> list[Path]:
    """Draw every figure that applies to ``run_list`` into ``out``; return the files written.

    One run: its decay, paths and phase figures. Several: their curves overlaid
    on one decay (and paths) figure, labels prefixed with each run's name.
    """
    out = Path(out)
    kinds = {r.kind for r in run_list}
    names = overlay_names(run_list)
    if kinds == {"train"}:
        return training.draw(run_list, out, formats, names=names)
    if len(kinds) > 1:
        raise RunFilesError("cannot overlay a training run with a measurement run; plot them separately")
    prefixes = [f"{n}: " if len(run_list) > 1 else "" for n in names]
    written, decay = [], []
    for run, prefix in zip(run_list, prefixes, strict=True):
        keep, fixed = _slice(run)
        decay += curves(run.runs, run.arrays, prefix=prefix, keep=keep, fixed=fixed)
    title = names[0] if len(run_list) == 1 else " vs ".join(names)
    if len(run_list) == 1 and fixed:
        title += f" ({fixed[0].split('.')[-1]}={run_list[0].grid[fixed[0]][0]}; phase.png has the grid)"
    written += _decay_figure(decay, title, out / "decay", formats)
    paths = []
    for run, prefix in zip(run_list, prefixes, strict=True):
        keep, fixed = _slice(run)
        kw = {"prefix": prefix, "keep": keep, "fixed": fixed}
        c = {x["label"]: x for x in curves(run.runs, run.arrays, part="c", **kw)}
        h = {x["label"]: x for x in curves(run.runs, run.arrays, part="h", **kw)}
        paths += [(label, c[label], h[label]) for label in c if label in h]
    if paths:
        written += _paths_figure(paths, out / "paths", formats)
    if len(run_list) == 1 and _is_2d(run_list[0].grid):
        written += _phase_figure(run_list[0], out / "phase", formats)
    return written


def overlay_names(run_list: list[Run]) -> list[str]:
    """What each run is called in a figure: its name alone, or, for several, its directory.

    Several runs are told apart by their directory names (``runs/a``, ``runs/b`` -> ``a``, ``b``);
    where those clash, by the shortest path suffix that differs (``x/run``, ``y/run``). A run
    without a directory (built in memory) is called by its config name.
    """
    if len(run_list) == 1:
        return [run_list[0].name]
    parts = [Path(r.path).resolve().parts if r.path is not None else (r.name,) for r in run_list]
    names = []
    for i, mine in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != i and p != mine]
        k = next((k for k in range(1, len(mine) + 1) if all(p[-k:] != mine[-k:] for p in others)), len(mine))
        names.append(Path(*mine[-k:]).as_posix())
    return [f"{n} ({i})" if names.count(n) > 1 else n for i, n in enumerate(names)]  # the same run twice


def _is_2d(grid: dict) -> bool:
    return len(grid) == 2 and all(len(v) > 1 for v in grid.values())


def _slice(run: Run):
    """``(keep, fixed)``: with a 2-D grid, draw only the runs at the second key's first value."""
    if not _is_2d(run.grid):
        return None, ()
    key, values = list(run.grid.items())[1]
    return (lambda r: r["point"].get(key) == values[0]), (key,)


def _decay_figure(found, title, base, formats) -> list[Path]:
    time = [c for c in found if c["axis"] == "time"]
    depth = [c for c in found if c["axis"] == "depth"]
    panels = [p for p in (time, depth) if p]
    if not panels:
        return []
    lines = max(len(p) for p in panels)
    many = lines > MAX_LINES
    width = 6.4 * len(panels) + (3.0 if many else 0.0)
    # a legend that does not fit inside goes below the axes: make room for it
    height = 4.2 + (0.0 if many or lines <= 4 else 0.24 * lines)
    fig, axes = plots.figure(1, len(panels), size=(width, height))
    axes = np.atleast_1d(axes)
    legend = "outside" if many else "auto"
    for ax, panel in zip(axes, panels, strict=True):
        both = len(panels) == 2
        theory = theory_lines(panel)
        if panel is time:
            sub = "through time" if both else None
            plots.decay_plot(ax, panel, title=sub, legend=legend, theory=theory)
        else:
            plots.depth_plot(ax, panel, title="through depth" if both else None, legend=legend, theory=theory)
    fig.suptitle(title, fontsize=plots.LABEL_SIZE + 2)
    return plots.save_figure(fig, base, formats)


CRITICAL = "theory: rate 0 (critical init, decay subexponential)"


def theory_lines(panel: list[dict]) -> list[dict]:
    """Dashed theory lines in each curve's colour; one legend entry for all of them.

    A predicted rate of exactly 0 (``|rate| < 1e-12``: a critical init, where the
    gradient decays slower than any exponential) draws no flat line, which would
    read as "no decay": it gets a legend entry of its own (``"draw": False``).
    """
    lines, drawn = [], False
    for i, curve in enumerate(panel):
        rate = curve.get("theory_rate", np.nan)
        if not np.isfinite(rate):
            continue
        if abs(rate) < 1e-12:
            label = f"{curve['label']}: {CRITICAL}"
            lines.append({"label": label, "rate": 0.0, "color": i, "show_rate": False, "draw": False})
            continue
        label = "dashed: theory, same colour" if not drawn else "_theory"
        lines.append({"label": label, "rate": rate, "color": i, "show_rate": False})
        drawn = True
    return lines


def _paths_figure(paths, base, formats) -> list[Path]:
    n = len(paths)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plots.figure(nrows, ncols, size=(4.6 * ncols, 3.6 * nrows))
    axes = np.atleast_1d(axes).ravel()
    lo, hi = np.inf, -np.inf
    for ax, (label, c, h) in zip(axes, paths, strict=False):
        steps = c["log10_norms"].shape[1] - 1
        plots.paths_plot(ax, np.arange(steps, -1, -1), c["log10_norms"], h["log10_norms"])
        ax.set_title(label, fontsize=plots.LABEL_SIZE)
        y0, y1 = ax.get_ylim()
        lo, hi = min(lo, y0), max(hi, y1)
    for ax in axes[:n]:
        ax.set_ylim(lo, hi)  # one scale: panels compare at a glance
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle("LSTM: cell-state path vs hidden path", fontsize=plots.LABEL_SIZE + 2)
    return plots.save_figure(fig, base, formats)


def phase_values(run: Run, label: str) -> tuple[np.ndarray, list, list]:
    """Median total rate over seeds on the 2-D grid: ``([Ny, Nx], x_values, y_values)``.

    x is the grid's first key, y its second; cells without runs are NaN.
    """
    (kx, xs), (ky, ys) = list(run.grid.items())
    values = np.full((len(ys), len(xs)), np.nan)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            rates = [
                _fit(r, "total", "rate")
                for r in run.runs
                if r["label"] == label and r["point"].get(kx) == x and r["point"].get(ky) == y
            ]
            if rates:
                values[i, j] = np.median(rates)
    return values, list(xs), list(ys)


def zero_crossing(values: np.ndarray, x_values) -> tuple[np.ndarray, np.ndarray]:
    """Per row i, the x where ``values[i]`` first changes sign (linear interpolation).

    Returns ``(x [M], row [M])`` for the rows that cross; the measured edge of chaos.
    """
    x = np.asarray(x_values, np.float64)
    cx, rows = [], []
    for i, row in enumerate(values):
        for j in range(len(row) - 1):
            a, b = row[j], row[j + 1]
            if np.isfinite(a) and np.isfinite(b) and a != b and (a <= 0 < b or b <= 0 < a):
                cx.append(x[j] + (0 - a) / (b - a) * (x[j + 1] - x[j]))
                rows.append(i)
                break
    return np.asarray(cx), np.asarray(rows)


def _numeric(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def phase_theory(run: Run, label: str) -> np.ndarray:
    """Predicted rate (``theory.predicted_rate``) per grid point, ``[Ny, Nx]``, NaN where none applies."""
    (kx, xs), (ky, ys) = list(run.grid.items())
    values = np.full((len(ys), len(xs)), np.nan)
    for r in run.runs:
        if r["label"] == label and r["fit"].get("theory_rate") is not None:
            values[list(ys).index(r["point"][ky]), list(xs).index(r["point"][kx])] = r["fit"]["theory_rate"]
    return values


def critical_line_theory(run: Run, label: str):
    """Mean-field edge of chaos ``(sigma_w [M], sigma_b [M])`` on a sigma_w x sigma_b grid, else None."""
    (kx, _), (ky, ys) = list(run.grid.items())
    spec = next(r for r in run.runs if r["label"] == label)
    opts = spec.get("cell_options", spec["options"])  # every option (older run directories: as given)
    mean_field_cell = spec["cell"] == "plain" or (
        spec["cell"] == "rnn" and opts.get("recurrent_init", "normal") == "normal"
    )
    if not (kx.endswith("weight_scale") and ky.endswith("bias_scale") and mean_field_cell):
        return None
    if opts.get("norm") is not None or opts.get("activation") not in theory.ACTIVATIONS:
        return None
    sigma_b = np.linspace(min(ys), max(ys), 60)
    input_scale = opts.get("input_scale", 1.0) if spec["cell"] == "rnn" else 0.0
    return theory.critical_line(opts["activation"], sigma_b, input_scale), sigma_b


def _phase_figure(run: Run, base, formats) -> list[Path]:
    labels = list(dict.fromkeys(r["label"] for r in run.runs))
    (kx, xs), (ky, ys) = list(run.grid.items())
    xv = np.asarray(xs, np.float64) if _numeric(xs) else np.arange(len(xs), dtype=np.float64)
    yv = np.asarray(ys, np.float64) if _numeric(ys) else np.arange(len(ys), dtype=np.float64)
    panels = []  # (label, title, values, critical line, measured edge)
    for label in labels:
        measured = phase_values(run, label)[0]
        predicted = (
            phase_theory(run, label) if _numeric(xs) and _numeric(ys) else np.full_like(measured, np.nan)
        )
        edge_x, rows = zero_crossing(measured, xv)
        edge = (edge_x, yv[rows]) if len(edge_x) > 1 else None
        line = critical_line_theory(run, label) if np.isfinite(predicted).any() else None
        span = float(np.nanmax(np.abs(np.concatenate([measured.ravel(), predicted.ravel()]))))
        panels.append((label, "measured", measured, line, edge, span))
        if np.isfinite(predicted).all():
            panels.append((label, "mean-field theory", predicted, line, None, span))
    n = len(panels)
    width = max(5.6, 0.62 * len(xs) + 2.6)  # room for the numbers in the cells
    fig, axes = plots.figure(1, n, size=(width * n, max(4.6, 0.45 * len(ys) + 2.0)))
    axes = np.atleast_1d(axes)
    axis = {r["label"]: r.get("axis", "time") for r in run.runs}
    for ax, (label, kind, values, line, edge, span) in zip(axes, panels, strict=True):
        unit = "layer" if axis[label] == "depth" else "step"
        what = f"rate (ln per {unit})" + (", median over seeds" if kind == "measured" else "")
        plots.heatmap(ax, values, xv, yv, x_label=kx.split(".")[-1], y_label=ky.split(".")[-1],
                      value_label=what, critical_line=line, span=span)  # fmt: skip
        notes = []
        if line is not None:
            notes.append("black line: mean-field edge of chaos")
        if edge is not None:
            ax.plot(*edge, linestyle="none", marker="o", markersize=6, markerfacecolor="white",
                    markeredgecolor="black", zorder=5, scalex=False, scaley=False)  # fmt: skip
            notes.append("circles: measured rate = 0")
        if not _numeric(xs):
            ax.set_xticks(xv, [str(v) for v in xs])
        if not _numeric(ys):
            ax.set_yticks(yv, [str(v) for v in ys])
        ax.set_title(f"{label}: {kind}" + "".join(f"\n{t}" for t in notes), fontsize=plots.LABEL_SIZE)
    fig.suptitle(f"{run.name}: gradient rate per grid point", fontsize=plots.LABEL_SIZE + 2)
    return plots.save_figure(fig, base, formats)
