"""``gradflow plot``: redraw or overlay run directories' figures from their files."""

from __future__ import annotations

from gradflow.cli.common import CliError


def _cmd_plot(args) -> int:
    from pathlib import Path

    from gradflow import figures, rundir
    from gradflow.runs import experiment

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
