"""What every verb shares: the one-line user error, ``--set KEY=VALUE`` parsing, several processes."""

from __future__ import annotations

import contextlib
import sys

import yaml


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


def start_processes(args) -> bool:
    """Join the processes that ``--coordinator/--num-processes/--process-id`` or ``--distributed``
    name (before anything runs on a device); True when this run spans several processes."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(v is None for v in explicit):
        return False
    from gradflow.engine import processes

    if args.distributed and any(v is not None for v in explicit):
        raise CliError(
            "--distributed detects the processes itself: leave out --coordinator, --num-processes "
            "and --process-id"
        )
    if args.process_timeout < 1:
        raise CliError(f"--process-timeout {args.process_timeout}: expected a number of seconds >= 1")
    spec = processes.Distributed(*explicit, timeout_s=args.process_timeout)  # all None: detected
    try:
        return processes.start(spec)
    except processes.ProcessError as err:
        raise CliError(str(err)) from None


@contextlib.contextmanager
def ending_every_process(multi: bool):
    """In a multi-process run, a failure ends this process at once with one line (the others see
    it go and end too) instead of waiting at the shutdown barrier for processes that are gone."""
    if not multi:
        yield
        return
    from gradflow.engine import processes

    try:
        yield
    except CliError as err:
        print(f"gradflow: error: {err}", file=sys.stderr)
        processes.exit_now(2)
    except KeyboardInterrupt:
        print("gradflow: interrupted", file=sys.stderr)
        processes.exit_now(130)
    except Exception as err:
        line = processes.lost(str(err).splitlines()[0]) if processes.is_lost_peer(err) else None
        line = line or f"process {processes.index()} of {processes.count()}: {type(err).__name__}: {err}"
        print(f"gradflow: error: {line.splitlines()[0]}", file=sys.stderr)
        processes.exit_now(3)
