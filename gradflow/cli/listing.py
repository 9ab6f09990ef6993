"""``gradflow list``: cells and options, measures, losses, tasks, optimizers, shipped configs."""

from __future__ import annotations

MEASURE_HELP = {
    "gradient_norms": "||dL/dh_t|| per step and carry part, one backward pass; decay fit (rate, half-life)",
}


LOSS_HELP = {
    "final": "sum of the final carry (every carry part gets a gradient at t = T)",
    "every_step": "sum of y_t^2 over all steps",
    "readout": "squared error of a fixed linear readout of y_T",
}


def _header(path) -> dict:
    """``{"command", "runtime", "figure"}`` from a config's leading comment lines (not the measured ones)."""
    from gradflow.words import PROSE_KEYS, read_header

    info = read_header(path.read_text())
    return {key: info[key] for key in PROSE_KEYS if key in info}


def _cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from gradflow import cells
    from gradflow.config import LOSSES, MEASURES, shipped_configs

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
    table = Table(title="shipped configs: gradflow run NAME [--quick]; gradflow config NAME > mine.yaml")
    table.add_column("config", style="bold")
    table.add_column("runtime")
    table.add_column("figure")
    for name, path in shipped_configs().items():
        info = _header(path)
        table.add_row(name, info.get("runtime", ""), info.get("figure", ""))
    console.print(table)
    return 0
