"""``gradflow claims``: reproduce the slide claims into a report directory."""

from __future__ import annotations

import sys

from gradflow.cli.common import CliError


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
