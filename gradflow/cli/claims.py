"""``gradflow claims``: reproduce the slide claims into a report directory."""

from __future__ import annotations

import sys

from gradflow.cli.common import CliError, ending_every_process, start_processes


def _cmd_claims(args) -> int:
    multi = start_processes(args)  # before anything runs on a device
    with ending_every_process(multi):
        return _claims(args)


def _open_report(out, force: bool):
    """The report directory's manifest; with several processes process 0 opens ``out`` and the
    others a scratch folder of their own (removed at the end): only process 0 writes ``out``."""
    import tempfile

    from gradflow import claims, rundir
    from gradflow.engine import processes

    message, manifest = "", None
    if processes.is_writer():
        try:
            manifest = claims.open_report(out, force)
        except rundir.RunDirError as err:
            message = str(err)
    message = processes.share(message.encode()).decode()
    if message:
        raise CliError(message if processes.is_writer() else f"process 0 refused: {message}")
    if manifest is None:
        manifest = claims.open_report(tempfile.mkdtemp(prefix="gradflow-claims-"), force=False)
    return manifest


def _claims(args) -> int:
    import shutil
    from pathlib import Path

    from gradflow import claims

    ids = (
        [c.id for c in claims.CLAIMS]
        if not args.only
        else [x.strip() for x in args.only.split(",") if x.strip()]
    )
    try:
        chosen = [claims.get(i) for i in ids]
    except ValueError as err:
        raise CliError(f"--only: {err}") from None
    out = Path(args.output)
    manifest = _open_report(out, args.force)
    if manifest.root != out:  # not process 0: its scratch folder
        try:
            return _run_claims(chosen, manifest, args, write=False)
        finally:
            shutil.rmtree(manifest.root, ignore_errors=True)
    return _run_claims(chosen, manifest, args, write=True)


def _run_claims(chosen, manifest, args, write: bool) -> int:
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from gradflow import claims
    from gradflow.engine import processes

    out = manifest.root
    results, failed = [], []
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("claims", total=len(chosen))
        for claim in chosen:
            bar.update(task, description=f"{claim.id}: {claim.title}")
            try:
                results.append(claims.run_claim(claim, out, quick=args.quick, manifest=manifest))
            except Exception as err:  # an experiment that fails is reported, the others still run
                if processes.count() > 1 and processes.is_lost_peer(err):
                    raise  # another process is gone: every later claim would fail the same way
                failed.append(
                    f"{claim.id} ({claim.experiment}.py): {type(err).__name__}: {err}".splitlines()[0]
                )
            bar.advance(task)
    if not write:
        me = f"process {processes.index()} of {processes.count()}"
        print(f"{me}: computed its share of the claims; process 0 wrote the report")
        return 1 if failed else 0
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
