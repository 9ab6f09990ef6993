"""The ``gradflow`` command: a thin shell over the library (I/O only here), one module per verb."""

from __future__ import annotations

import argparse
import functools
import sys

from gradflow.cli.claims import _cmd_claims
from gradflow.cli.common import CliError
from gradflow.cli.config import _cmd_config
from gradflow.cli.listing import _cmd_list
from gradflow.cli.measure import _cmd_measure
from gradflow.cli.plot import _cmd_plot
from gradflow.cli.run import _cmd_run

EPILOG = """examples:
  gradflow run compare_cells
  gradflow run compare_cells --quick -o /tmp/run --set sweep.seeds=[0,1]
  gradflow run my_config.yaml
  gradflow list
  gradflow config compare_cells > my_config.yaml
  gradflow measure lstm -T 200 --set forget_bias=3
  gradflow measure rnn --set weight_scale=1.5 --set hidden_size=256 --json
  gradflow measure residual --set depth=100
  gradflow --no-compile-cache run compare_cells --quick
  gradflow run phase_diagram --coordinator node0:7654 --num-processes 2 --process-id 0   # on node0
  gradflow run phase_diagram --coordinator node0:7654 --num-processes 2 --process-id 1   # on node1

compiled programs are kept in ~/.cache/gradflow/jax ($XDG_CACHE_HOME/gradflow/jax), at most 2 GiB:
--compile-cache DIR or GRADFLOW_COMPILE_CACHE_DIR=DIR moves it, --no-compile-cache or
GRADFLOW_COMPILE_CACHE=0 turns it off"""


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


def _process_options(parser: argparse.ArgumentParser) -> None:
    """Several processes as one run (``jax.distributed``): ``run`` and ``claims``."""
    group = parser.add_argument_group(
        "several processes (jax.distributed)",
        "start the same command in every process; process 0 writes the output directory",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (it serves it)")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes run together")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0 <= I < N")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="take the three from SLURM, Open MPI, Kubernetes or a TPU pod (jax.distributed.initialize)",
    )
    group.add_argument(
        "--process-timeout",
        type=int,
        default=60,
        metavar="S",
        help="a process that stops answering ends the run on every process after S seconds (default 60)",
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
    p_list = verb("list", help="list the cells, tasks, optimizers and shipped configs")
    p_list.set_defaults(func=_cmd_list)
    p_r = verb(
        "run",
        help="run an experiment config into a run directory",
        description="Run CONFIG's sweep (cells x grid x seeds, one compile per shape) and write "
        "config.yaml, results.npz, results.csv, summary.json and the decay figure to the output "
        "directory. Re-running after an interrupt resumes.",
    )
    p_r.add_argument(
        "config", help="a YAML config file, or a shipped config's name (gradflow list), e.g. compare_cells"
    )
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
    p_r.add_argument(
        "--batching",
        choices=["auto", "map", "vmap"],
        default=None,
        help="how the runs of one compiled call are batched: lax.map (one after another) or vmap "
        "(all at once); default auto: map on CPU, vmap on GPU/TPU (or GRADFLOW_RUN_BATCHING)",
    )
    _process_options(p_r)
    p_r.set_defaults(func=_cmd_run)
    p_cfg = verb(
        "config",
        help="print a shipped config's YAML (a starting point for your own)",
        description="Print the shipped config NAME (see `gradflow list`) to stdout, or write it to "
        "-o FILE (never over an existing file). Edit it, then `gradflow run FILE`.",
    )
    p_cfg.add_argument("name", metavar="NAME", help="a shipped config, e.g. compare_cells")
    p_cfg.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout (a new file)")
    p_cfg.set_defaults(func=_cmd_config)
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
    _process_options(p_c)
    p_c.set_defaults(func=_cmd_claims)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM: unwind like Ctrl-C, so temp files are removed


def entry() -> None:
    """The ``gradflow`` command (console script and ``python -m gradflow.cli``): ``main()``, then
    ``exit_quickly``. An exception from ``main`` exits the ordinary way."""
    exit_quickly(main())


def exit_quickly(code: int | None) -> None:
    """End the process with ``code`` without tearing the interpreter down.

    For when everything is written: runs the exit handlers (logging, JAX's clean-up, which ends a
    ``jax.distributed`` run with its shutdown barrier, file locks, matplotlib), flushes every file
    object still open (the standard streams; anything a user's module left open) and leaves with
    ``os._exit``. That skips the destruction of the imported modules and of XLA's objects, 0.4-0.5 s
    after ``gradflow run compare_cells``, for 0.1 s of looking for open files.
    """
    import atexit
    import contextlib
    import gc
    import io
    import os

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython: the ordinary exit
        sys.exit(code)
    run_exit_handlers()
    for obj in gc.get_objects():  # files still open (gradflow closes its own): flush their buffers
        if isinstance(obj, io.IOBase):
            with contextlib.suppress(Exception):  # closed, unflushable, a closed pipe (gradflow list | head)
                if not obj.closed:
                    obj.flush()
    os._exit(int(code or 0))


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
    if args.command not in ("plot", "config"):
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
        if args.command not in ("plot", "config"):  # these never compile
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
