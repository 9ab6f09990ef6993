"""The ``gradflow`` command: a thin shell over the library (I/O only here)."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

EPILOG = """examples:
  gradflow run configs/compare_cells.yaml
  gradflow run configs/compare_cells.yaml --quick -o /tmp/run --set sweep.seeds=[0,1]
  gradflow list
  gradflow measure lstm -T 200 --set forget_bias=3
  gradflow measure rnn --set weight_scale=1.5 --set hidden_size=256 --json
  gradflow measure residual --set depth=100"""


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _parse_sets(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set hidden_size=64")
        try:
            options[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            raise CliError(f"--set {pair!r}: cannot read value {value!r}") from None
    return options


def _cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from gradflow import cells

    table = Table(title="gradflow cells (gradflow.cells.get(name, **options))")
    table.add_column("cell", style="bold")
    table.add_column("options (default)")
    for name in cells.names():
        opts = cells.options(name)
        size, *rest = opts
        shown = [f"{size} (required)"] + [f"{k}={opts[k]!r}" for k in rest]
        table.add_row(name, ", ".join(shown))
    Console().print(table)
    return 0


def _cmd_measure(args) -> int:
    import numpy as np

    from gradflow import cells, sweep

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


def _cmd_run(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from gradflow import config as cfgmod
    from gradflow import experiment

    try:
        cfg = cfgmod.load_config(args.config, args.set, quick=args.quick)
    except cfgmod.ConfigError as err:
        raise CliError(str(err)) from None
    out = Path(args.output or cfg.output.dir)
    if any(spec.options.get("dtype") == "float64" for spec in cfg.cells):
        import jax

        jax.config.update("jax_enable_x64", True)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{cfg.name}", total=None)

        def progress(i, n, label, skipped):
            bar.update(task, total=n, completed=i + 1, description=f"{cfg.name}: {label}")

        try:
            summary = experiment.run_experiment(cfg, out, force=args.force, progress=progress)
        except experiment.RunDirError as err:
            raise CliError(str(err)) from None
    table = Table(title=f"{cfg.name}: median over seeds ({out})")
    for col in ("setting", "seeds", "rate / step", "half-life (steps)", "log10 first/last"):
        table.add_column(col, justify="right")
    for s in summary["settings"]:
        table.add_row(
            s["label"],
            str(s["seeds"]),
            f"{s['median_rate']:+.4f}",
            f"{s['median_half_life']:.3g}",
            f"{s['median_log10_first_last_ratio']:+.2f}",
        )
    console = Console()
    console.print(table)
    resumed = " (resumed)" if summary["resumed"] else ""
    console.print(
        f"{len(summary['runs'])} runs, {summary['compiles']} XLA compilation(s), "
        f"{summary['wall_time_s']:.1f} s{resumed}; results in {out}/"
    )
    return 0


def _print_measure(summary: dict) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    title = f"{summary['cell']} {summary['options']}, T = {summary['steps']}, loss on {summary['loss']}"
    table = Table(title=title)
    for col in ("carry", "log10 |dL/dh_0|", "log10 |dL/dh_T|", "rate / step", "half-life", "R^2"):
        table.add_column(col, justify="right")
    for row in summary["carry"]:
        rate = row["rate_per_step"]
        life = row["half_life_steps"]
        kind = "halves" if rate < 0 else "doubles"
        table.add_row(
            row["carry"],
            f"{row['log10_norm_first']:.2f}",
            f"{row['log10_norm_last']:.2f}",
            f"{rate:+.4f}",
            f"{kind} every {life:.3g}" if np.isfinite(life) else "-",
            f"{row['r2']:.3f}",
        )
    console = Console()
    console.print(table)
    if summary["nonfinite_step"] >= 0:
        console.print(f"[red]the carry became inf/NaN at step {summary['nonfinite_step']}[/red]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradflow",
        description="Measure how gradients vanish or explode through time and depth.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_list = sub.add_parser("list", help="list the cells and their options")
    p_list.set_defaults(func=_cmd_list)
    p_r = sub.add_parser(
        "run",
        help="run an experiment config into a run directory",
        description="Run CONFIG's sweep (cells x grid x seeds, one compile per shape) and write "
        "config.yaml, results.npz, results.csv, summary.json and the decay figure to the output "
        "directory. Re-running after an interrupt resumes.",
    )
    p_r.add_argument("config", help="YAML config, e.g. configs/compare_cells.yaml")
    p_r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set inputs.steps=50 --set sweep.seeds=[0,1]",
    )
    p_r.add_argument("-o", "--output", help="run directory (default: the config's output.dir)")
    p_r.add_argument("--force", action="store_true", help="overwrite a non-empty run directory")
    p_r.add_argument("--quick", action="store_true", help="apply the config's quick overrides (small sizes)")
    p_r.set_defaults(func=_cmd_run)
    p_m = sub.add_parser(
        "measure",
        help="per-step gradient norms of one cell at init, with the decay fit",
        description="Run gradient_flow on a cell at initialization with random N(0,1) inputs "
        "and print log10 ||dL/dh_t|| at both ends, the per-step rate and the half-life.",
    )
    p_m.add_argument("cell", help="cell name (see `gradflow list`)")
    p_m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="cell option")
    p_m.add_argument("-T", "--steps", type=int, default=100, help="sequence length (default 100)")
    p_m.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    p_m.add_argument("--input-size", type=int, default=8, help="input size (default 8)")
    p_m.add_argument("--seed", type=int, default=0)
    p_m.add_argument("--loss", choices=["final", "every_step", "readout"], default="final")
    p_m.add_argument("--json", action="store_true", help="print the summary as JSON")
    p_m.set_defaults(func=_cmd_measure)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for name in ("steps", "batch", "input_size"):
        if getattr(args, name, 1) < 1:
            print(f"gradflow: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except CliError as err:
        print(f"gradflow: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
