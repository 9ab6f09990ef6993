"""The ``gradflow`` command: a thin shell over the library (I/O only here)."""

from __future__ import annotations

import argparse
import functools
import json
import sys

import yaml

EPILOG = """examples:
  gradflow run configs/compare_cells.yaml
  gradflow run configs/compare_cells.yaml --quick -o /tmp/run --set sweep.seeds=[0,1]
  gradflow list
  gradflow measure lstm -T 200 --set forget_bias=3
  gradflow measure rnn --set weight_scale=1.5 --set hidden_size=256 --json
  gradflow measure residual --set depth=100
  gradflow --no-compile-cache run configs/compare_cells.yaml --quick

compiled programs are kept in ~/.cache/gradflow/jax ($XDG_CACHE_HOME/gradflow/jax), at most 2 GiB:
--compile-cache DIR or GRADFLOW_COMPILE_CACHE_DIR=DIR moves it, --no-compile-cache or
GRADFLOW_COMPILE_CACHE=0 turns it off"""


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


MEASURE_HELP = {
    "gradient_norms": "||dL/dh_t|| per step and carry part, one backward pass; decay fit (rate, half-life)",
}
LOSS_HELP = {
    "final": "sum of the final carry (every carry part gets a gradient at t = T)",
    "every_step": "sum of y_t^2 over all steps",
    "readout": "squared error of a fixed linear readout of y_T",
}


def shipped_configs() -> list:
    """The YAML configs in ``./configs`` and in the source checkout's ``configs/`` (deduplicated)."""
    from pathlib import Path

    import gradflow

    found = {}
    for folder in (Path("configs"), Path(gradflow.__file__).resolve().parents[1] / "configs"):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.name, path)
    return list(found.values())


def _header(path) -> dict:
    """``{"command", "runtime", "figure"}`` from a config's leading comment lines (not the measured ones)."""
    from gradflow.words import PROSE_KEYS, read_header

    info = read_header(path.read_text())
    return {key: info[key] for key in PROSE_KEYS if key in info}


def _cmd_list(args) -> int:
    import os

    from rich.console import Console
    from rich.table import Table

    from gradflow import cells
    from gradflow.config import LOSSES, MEASURES

    console = Console()
    table = Table(title="cells: gradflow.cells.get(name, **options), or `cell:` in a config")
    table.add_column("cell", style="bold")
    table.add_column("options (default)")
    for name in cells.names():
        opts = cells.options(name)
        size, *rest = opts
        shown = [f"{size} (required)"] + [f"{k}={opts[k]!r}" for k in rest]
        table.add_row(name, ", ".join(shown))
    console.print(table)
    table = Table(title="measures (`measures:`) and losses (`loss:`)")
    table.add_column("name", style="bold")
    table.add_column("what")
    for name in MEASURES:
        table.add_row(f"measure {name}", MEASURE_HELP.get(name, ""))
    for name in LOSSES:
        table.add_row(f"loss {name}", LOSS_HELP.get(name, ""))
    console.print(table)
    from gradflow.learn import optim, tasks

    table = Table(
        title="tasks (`task: {name, options}`: a training config) and their learned-nothing baseline"
    )
    table.add_column("task", style="bold")
    table.add_column("options (default)")
    table.add_column("baseline (at the defaults)")
    for name in tasks.names():
        opts = tasks.options(name)
        shown = ", ".join(f"{k}={v!r}" if v is not None else f"{k} (required)" for k, v in opts.items())
        if name == "npz":
            base = "from the data: class entropy or target variance"
        else:
            task = tasks.get(name)
            base = f"{task.baseline:.4g} ({task.baseline_note})"
        table.add_row(name, shown, base)
    console.print(table)
    console.print(
        "optimizers (`train.optimizer`, optax): "
        + ", ".join(optim.OPTIMIZERS)
        + "\nschedules (`train.schedule`, values multiply train.learning_rate): "
        + ", ".join(optim.SCHEDULES)
    )
    table = Table(title="shipped configs: gradflow run PATH [--quick]")
    table.add_column("config", style="bold")
    table.add_column("runtime")
    table.add_column("figure")
    for path in shipped_configs():
        info = _header(path)
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
        table.add_row(shown, info.get("runtime", ""), info.get("figure", ""))
    console.print(table)
    return 0


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


def _cmd_run(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    from gradflow import config as cfgmod
    from gradflow import experiment

    try:
        cfg = experiment.load_config(args.config, args.set, quick=args.quick)
    except cfgmod.ConfigError as err:
        raise CliError(str(err)) from None
    out = Path(args.output or cfg.output.dir)
    if any(spec.options.get("dtype") == "float64" for spec in cfg.cells):
        import jax

        jax.config.update("jax_enable_x64", True)
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(f"{cfg.name}: compiling and running", total=None)

        stop = _StopBetweenGroups()

        def progress(i, n, label, skipped):
            done = "kept from the interrupted run" if skipped else "done"
            bar.update(task, total=n, completed=i + 1, description=f"{cfg.name}: {label} {done}")
            stop.check()

        def step_progress(i, n, label, step, steps):
            text = f"{cfg.name}: group {i + 1}/{n} {label}: step {step}"
            bar.update(task, total=steps, completed=step, description=text)

        try:
            with stop:
                summary = experiment.run_experiment(
                    cfg,
                    out,
                    force=args.force,
                    progress=progress,
                    step_progress=step_progress,
                    should_stop=lambda: stop.requested,
                    source=args.config,
                )
        except (experiment.RunDirError, cfgmod.ConfigError) as err:
            raise CliError(str(err)) from None
        except KeyboardInterrupt:
            bar.stop()
            kept = "finished groups and checkpoints" if cfg.task is not None else "finished groups"
            print(
                f"gradflow: interrupted; {kept} are kept in {out}/, run the same command again to resume",
                file=sys.stderr,
            )
            return 130
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough that the table does not wrap
        console = Console(width=120)
    if summary.get("kind") == "train":
        console.print(_train_table(summary, out))
    else:
        console.print(_measure_table(summary, cfg, out))
    resumed = " (resumed)" if summary["resumed"] else ""
    cache = summary["compile_cache"]
    cached = (
        f"{cache['hits']}/{cache['requests']} from the compile cache" if cache["dir"] else "compile cache off"
    )
    console.print(
        f"{len(summary['runs'])} runs, {summary['compiles']} compiled group(s) "
        f"({summary['compile_time_s']:.1f} s compiling, {cached}), "
        f"{summary['wall_time_s']:.1f} s in all{resumed}; "
        f"results and figures ({', '.join(summary['figures'])}) in {out}/"
    )
    return 0


def _train_table(summary: dict, out):
    from rich.table import Table

    table = Table(title=f"{summary['name']}: final held-out loss / learned-nothing baseline ({out})")
    table.add_column("setting", no_wrap=True)
    for col in ("seeds", "loss/base", "solved", "at step", "diverged", "clipped", "ms/step", "params"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in summary["settings"]:
        n = len(s["seeds"])
        ratio = s["median_final_ratio"]
        at = s["median_solved_step"]
        table.add_row(
            s["label"],
            str(n),
            "-" if ratio is None else f"{ratio:.3f}",
            f"{s['solved']}/{n}",
            "-" if at is None else f"{at:.0f}",
            f"{s['diverged']}/{n}",
            f"{100 * s['median_clipped_fraction']:.0f}%",
            f"{1000 * s['time_per_step_s']:.2f}",
            f"{s['param_count']:,}",
        )
    return table


def _measure_table(summary: dict, cfg, out):
    from rich.table import Table

    from gradflow.words import setting_label

    table = Table(title=f"{cfg.name}: median over seeds ({out})")
    theory = any(s["theory_rate"] is not None for s in summary["settings"])
    columns = ["setting", "seeds", "rate (ln/step)", *(["theory"] if theory else []), "going back"]
    unit = {setting_label(r): "layer" if r.get("axis") == "depth" else "step" for r in summary["runs"]}
    for col in [*columns, "log10 first/last norm"]:
        table.add_column(col, justify="right")
    for s in summary["settings"]:
        predicted = "-" if s["theory_rate"] is None else f"{s['theory_rate']:+.4f}"
        table.add_row(
            s["label"],
            str(s["seeds"]),
            f"{s['median_rate']:+.4f}",
            *([predicted] if theory else []),
            _half_life(s["median_rate"], s["median_half_life"], unit.get(s["label"], "step")),
            f"{s['median_log10_first_last_ratio']:+.2f}",
        )
    return table


def _half_life(rate: float, life: float, unit: str = "step") -> str:
    """``vanishes, halves every 3.7 steps`` / ``grows, doubles every 21 steps`` / ``flat`` / ``no fit``."""
    from gradflow.words import describe_rate

    return describe_rate(rate, life, unit)


def _cmd_plot(args) -> int:
    from pathlib import Path

    from gradflow import experiment, figures, rundir

    dirs = [Path(d) for d in args.run_dirs]
    if args.output is None and len(dirs) > 1:
        raise CliError(f"overlaying {len(dirs)} runs needs -o DIR for the figures")
    out = Path(args.output) if args.output else dirs[0]
    try:
        runs = [figures.load(d) for d in dirs]
    except figures.RunFilesError as err:
        raise CliError(str(err)) from None
    formats = tuple(args.format)
    try:
        if args.output is None:  # a run's own figures are redrawn in place
            manifest = rundir.Manifest.read(out)
            allowed = set(runs[0].figures) | (set(manifest.entries) if manifest else set())
        else:
            manifest, _ = rundir.open_dir(out, "figures", protect=[(d, "a run being plotted") for d in dirs])
            allowed = set(manifest.entries) if args.force else set()
    except rundir.RunDirError as err:
        raise CliError(str(err)) from None
    targets = [f"{stem}.{fmt}" for stem in experiment.FIGURE_STEMS for fmt in formats]
    clash = sorted(name for name in targets if (out / name).exists() and name not in allowed)
    if clash:
        owned = manifest is not None and all(name in manifest.entries for name in clash)
        hint = (
            "pass --force or choose another -o" if owned else "which gradflow did not write; use another -o"
        )
        raise CliError(f"{out}: would overwrite {', '.join(clash)}; {hint}")
    try:
        if manifest is not None:
            manifest.record(*targets)
        written = figures.draw(runs, out, formats)
        if manifest is not None:
            manifest.remove([t for t in targets if not (out / t).exists()])  # listed: what exists
    except OSError as err:
        raise CliError(f"{out}: cannot write the figures ({err.strerror})") from None
    print("\n".join(str(p) for p in written))
    return 0


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


def _cache_options(parser: argparse.ArgumentParser, default) -> None:
    """``--compile-cache DIR`` / ``--no-compile-cache``: on ``gradflow`` itself (``default`` None) and
    on every verb (``default`` SUPPRESS, so that a verb without them keeps what came before it)."""
    parser.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=default,
        help="keep compiled programs in DIR (default $GRADFLOW_COMPILE_CACHE_DIR or ~/.cache/gradflow/jax)",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        default=False if default is None else default,
        help="compile everything afresh and keep nothing (or GRADFLOW_COMPILE_CACHE=0)",
    )


def build_parser() -> argparse.ArgumentParser:
    from gradflow.config import FORMATS

    parser = argparse.ArgumentParser(
        prog="gradflow",
        description="Measure how gradients vanish or explode through time and depth.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _cache_options(parser, None)
    verb_options = argparse.ArgumentParser(add_help=False)
    _cache_options(verb_options, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    verb = functools.partial(sub.add_parser, parents=[verb_options])
    p_list = verb("list", help="list the cells and their options")
    p_list.set_defaults(func=_cmd_list)
    p_r = verb(
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
    p_p = verb(
        "plot",
        help="redraw the figures of one run directory, or overlay several",
        description="Draw decay (and, where they apply, paths and phase) figures from finished run "
        "directories. One RUN_DIR: its own figures are redrawn in place (or into -o DIR). Several: "
        "their curves are overlaid, labels prefixed with each run's name, into -o DIR.",
    )
    p_p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories written by `gradflow run`")
    p_p.add_argument("-o", "--output", help="where the figures go (default: the single RUN_DIR)")
    p_p.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        help="figure format, repeatable (default: png and svg)",
    )
    p_p.add_argument("--force", action="store_true", help="overwrite figures that are already there")
    p_p.set_defaults(func=_cmd_plot)
    p_m = verb(
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
    p_c = verb(
        "claims",
        help="reproduce the slide claims: report.md, claims.json, report.html with a verdict per claim",
        description="Run each claim's experiment (experiments/), hold the numbers against its criterion "
        "and write report.md, claims.json and report.html with the figures. Exit 0 when every claim "
        "ran (a 'not reproduced' verdict is a result, not an error).",
    )
    p_c.add_argument("--only", help="comma-separated claim ids, e.g. C1,C6 (default: all)")
    p_c.add_argument("--quick", action="store_true", help="small sizes (the tests use this)")
    p_c.add_argument("-o", "--output", default="runs/claims", help="report directory (default runs/claims)")
    p_c.add_argument("--force", action="store_true", help="overwrite a non-empty report directory")
    p_c.set_defaults(func=_cmd_claims)
    return parser


def _cmd_claims(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from gradflow import claims, rundir

    ids = (
        [c.id for c in claims.CLAIMS]
        if not args.only
        else [x.strip() for x in args.only.split(",") if x.strip()]
    )
    try:
        chosen = [claims.get(i) for i in ids]
    except ValueError as err:
        raise CliError(f"--only: {err}") from None
    missing = [c.id for c in chosen if not (claims.experiments_dir() / f"{c.experiment}.py").is_file()]
    if missing:
        raise CliError(f"no experiment yet for {', '.join(missing)}; run the others with --only")
    out = Path(args.output)
    try:
        manifest = claims.open_report(out, args.force)
    except rundir.RunDirError as err:
        raise CliError(str(err)) from None
    results, failed = [], []
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("claims", total=len(chosen))
        for claim in chosen:
            bar.update(task, description=f"{claim.id}: {claim.title}")
            try:
                results.append(claims.run_claim(claim, out, quick=args.quick, manifest=manifest))
            except Exception as err:  # an experiment that fails is reported, the others still run
                failed.append(
                    f"{claim.id} ({claim.experiment}.py): {type(err).__name__}: {err}".splitlines()[0]
                )
            bar.advance(task)
    if results:
        claims.finish_report(results, manifest)
    console = Console() if Console().is_terminal else Console(width=140)
    table = Table(title=f"slide claims ({out}/report.md)")
    for col in ("claim", "verdict", "measured", "criterion"):
        table.add_column(col)
    for r in results:
        table.add_row(r.id, r.verdict, r.measured, r.criterion)
    console.print(table)
    for line in failed:
        print(f"gradflow: error: claim {line}", file=sys.stderr)
    return 1 if failed else 0


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM: unwind like Ctrl-C, so temp files are removed


class _StopBetweenGroups:
    """SIGINT/SIGTERM during ``gradflow run``: stop after the group being computed.

    Raising from the signal handler itself can be swallowed (a handler that runs
    inside a garbage-collection callback has its exception ignored), so the first
    signal only sets a flag that the progress callback turns into
    ``KeyboardInterrupt`` at the next group boundary; a second signal raises at once.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("gradflow: stopping after this group or training chunk (signal again to stop now)\n")

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _enable_compile_cache(args) -> None:
    from gradflow.engine import compile_cache

    try:
        compile_cache.enable(args.compile_cache, enabled=False if args.no_compile_cache else None)
    except compile_cache.CacheDirError as err:
        raise CliError(str(err)) from None


def _warn_if_cache_never_hits(args) -> None:
    if args.command != "plot":
        from gradflow.engine import compile_cache

        compile_cache.warn_if_never_hits()


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for name in ("steps", "batch", "input_size"):
        if getattr(args, name, 1) < 1:
            print(f"gradflow: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.command == "plot" and not args.format:
        args.format = ["png", "svg"]
    try:
        if args.command != "plot":  # figures never compile
            _enable_compile_cache(args)
        try:
            return args.func(args)
        finally:
            _warn_if_cache_never_hits(args)
    except CliError as err:
        print(f"gradflow: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
