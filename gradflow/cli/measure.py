"""``gradflow measure``: one cell at initialization, no config."""

from __future__ import annotations

import json

from gradflow.cli.common import CliError, _parse_sets


def _cmd_measure(args) -> int:
    import numpy as np

    from gradflow import cells
    from gradflow.engine import sweep

    options = _parse_sets(args.set)
    if args.cell not in cells.names():
        raise CliError(f"unknown cell {args.cell!r}; choose from {cells.names()}")
    size_key = next(iter(cells.options(args.cell)))
    options.setdefault(size_key, 64)
    if "depth" in cells.options(args.cell):
        options.setdefault("depth", args.steps)
    try:
        cells.get(args.cell, **options)  # validate before compiling
        inputs = sweep.Inputs(size=args.input_size, steps=args.steps, batch=args.batch)
        res, _ = sweep.measure_runs(args.cell, [options], [args.seed], inputs, loss=args.loss)
    except (ValueError, TypeError) as err:
        raise CliError(str(err).splitlines()[0]) from None
    rows = [
        {
            "carry": part,
            "log10_norm_first": float(log10[0, 0]),
            "log10_norm_last": float(log10[0, -1]),
            "rate_per_step": float(res.rate[part][0]),
            "half_life_steps": float(res.half_life[part][0]),
            "r2": float(res.r2[part][0]),
        }
        for part, log10 in res.log10_norms.items()
    ]
    summary = {
        "cell": args.cell,
        "options": options,
        "steps": int(np.shape(res.total_log10_norms)[1] - 1),
        "loss": args.loss,
        "carry": rows,
        "total_rate_per_step": float(res.total_rate[0]),
        "nonfinite_step": int(res.nonfinite_step[0]),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_measure(summary)
    return 0


def _half_life(rate: float, life: float, unit: str = "step") -> str:
    """``vanishes, halves every 3.7 steps`` / ``grows, doubles every 21 steps`` / ``flat`` / ``no fit``."""
    from gradflow.words import describe_rate

    return describe_rate(rate, life, unit)


def _print_measure(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{summary['cell']} {summary['options']}, T = {summary['steps']}, loss on {summary['loss']}"
    table = Table(title=title)
    for col in ("carry", "log10 |dL/dh_0|", "log10 |dL/dh_T|", "rate / step", "going back", "R^2"):
        table.add_column(col, justify="right")
    unit = "layer" if "depth" in summary["options"] else "step"  # a residual/plain stack
    for row in summary["carry"]:
        rate = row["rate_per_step"]
        table.add_row(
            row["carry"],
            f"{row['log10_norm_first']:.2f}",
            f"{row['log10_norm_last']:.2f}",
            f"{rate:+.4f}",
            _half_life(rate, row["half_life_steps"], unit),
            f"{row['r2']:.3f}",
        )
    console = Console()
    console.print(table)
    if summary["nonfinite_step"] >= 0:
        console.print(f"[red]the carry became inf/NaN at step {summary['nonfinite_step']}[/red]")
