"""``gradflow run CONFIG``: a config into a run directory, with progress, a closing table and line."""

from __future__ import annotations

import os
import sys

from gradflow.cli.common import CliError, ending_every_process, start_processes
from gradflow.cli.measure import _half_life


def _cmd_run(args) -> int:
    multi = start_processes(args)  # before anything runs on a device
    with ending_every_process(multi):
        return _run(args)


def _run(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    from gradflow import config as cfgmod
    from gradflow.engine.sweep import BATCHINGS, batching
    from gradflow.runs import experiment

    try:
        source = cfgmod.resolve_config(args.config)  # a path, or a shipped config's name
        cfg = experiment.load_config(source, args.set, quick=args.quick)
    except cfgmod.ConfigError as err:
        raise CliError(str(err)) from None
    out = Path(args.output or cfg.output.dir)
    mode = args.batching or os.environ.get("GRADFLOW_RUN_BATCHING") or "auto"
    if mode not in BATCHINGS:
        raise CliError(f"GRADFLOW_RUN_BATCHING={mode!r}: expected one of {', '.join(BATCHINGS)}")
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

        def step_progress(i, n, label, step, steps):
            text = f"{cfg.name}: group {i + 1}/{n} {label}: step {step}"
            bar.update(task, total=steps, completed=step, description=text)

        try:
            with stop, batching(mode):
                summary = experiment.run_experiment(
                    cfg,
                    out,
                    force=args.force,
                    progress=progress,
                    step_progress=step_progress,
                    should_stop=lambda: stop.requested,
                    source=source,
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
    from gradflow.engine import processes

    if not processes.is_writer():
        print(
            f"process {processes.index()} of {processes.count()}: computed its share of "
            f"{len(summary['runs'])} runs; process 0 wrote {out}/"
        )
        return 0
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


class _StopBetweenGroups:
    """SIGINT/SIGTERM during ``gradflow run``: stop after the group being computed.

    Raising from the signal handler itself can be swallowed (a handler that runs
    inside a garbage-collection callback has its exception ignored), so the first
    signal only sets a flag that the runner polls (``should_stop``; with several processes, a stop
    asked of any of them) and turns into ``KeyboardInterrupt`` at the next group boundary or
    training chunk; a second signal raises at once.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("gradflow: stopping after this group or training chunk (signal again to stop now)\n")

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
