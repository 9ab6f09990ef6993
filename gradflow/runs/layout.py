"""What a finished run directory holds, and reading back the groups finished so far (``.parts``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from gradflow import config as cfgmod
from gradflow import figures
from gradflow.engine import processes
from gradflow.rundir import PARTS, RunDirError, RunState, atomic_write, open_run, provenance, write_npz

RESULT_FILES = ("config.yaml", "results.npz", "results.csv", "summary.json")
RUN_COLUMNS = ("run_id", "label", "cell", "seed")  # every results.csv row starts with these, then the point
FIGURE_STEMS = (*figures.NAMES, "learning", "flow_heatmap", "flow_rate", "gates")


def result_files(cfg) -> list[str]:
    """Every file a finished run directory of ``cfg`` may hold (listed in its manifest before
    they are written, so that an interrupted write is still known as gradflow's)."""
    return [*RESULT_FILES, *(f"{s}.{fmt}" for s in FIGURE_STEMS for fmt in cfg.output.formats)]


def load_parts(out: Path, groups: list[dict]) -> tuple[list, list[dict]]:
    """The finished groups' ``DIR/.parts/<i>.npz`` as dicts, and all runs in group order."""
    runs, parts = [], []
    for g_idx, group in enumerate(groups):
        with np.load(out / PARTS / f"{g_idx}.npz") as data:
            parts.append({k: data[k] for k in data.files})
        runs.extend(group["runs"])
    return runs, parts


def open_shared(out: Path, cfg_text: str, *, force: bool, protect=()) -> RunState | None:
    """``rundir.open_run`` on the process that writes (process 0); with several processes every one
    of them raises its refusal, and the others get None (they never touch the directory)."""
    if processes.count() == 1:
        return open_run(out, cfg_text, force=force, protect=protect)
    message, state = "", None
    if processes.is_writer():
        try:
            state = open_run(out, cfg_text, force=force, protect=protect)
        except RunDirError as err:
            message = str(err)
    message = processes.share(message.encode()).decode()
    if message:
        raise RunDirError(message if processes.is_writer() else f"process 0 refused: {message}")
    return state


def shared_summary(summary: dict | None) -> dict:
    """The run's summary as process 0 wrote it, on every process (all wait for process 0 here)."""
    if processes.count() == 1:
        return summary
    return json.loads(processes.share(json.dumps(summary).encode() if summary is not None else None))


def unfinished(out: Path, groups: list[dict], progress=None):
    """``(index, group)`` of each group with no ``out/.parts/<index>.npz`` yet: the one resume rule
    of measuring and training runs (process 0 looks, every process gets its answer). A finished
    group is reported to ``progress(i, n, label, skipped=True)`` instead."""
    seen = [(out / PARTS / f"{g}.npz").exists() for g in range(len(groups))] if processes.is_writer() else []
    finished = json.loads(processes.share(json.dumps(seen).encode()))
    for g_idx, group in enumerate(groups):
        if finished[g_idx]:
            if progress:
                progress(g_idx, len(groups), group["label"], skipped=True)
            continue
        yield g_idx, group


def write_results(
    out: Path,
    cfg,
    *,
    runs: list[dict],
    arrays: dict,
    columns: Iterable[str],
    rows: Callable[[int, dict], Iterable[list]],
    settings: list[dict],
    drawn: list[Path],
    timing: dict,
    resumed: bool,
    source=None,
    **fields,
) -> dict:
    """The one writer of a finished run directory, measuring or training; returns the summary.

    ``results.npz`` holds ``arrays``; each ``results.csv`` row is ``RUN_COLUMNS``, the run's sweep
    point (one column per swept key), then ``columns`` (``rows(i, run)`` yields run i's values);
    ``config.yaml``; ``summary.json`` last (``name``, ``fields`` such as ``kind``, ``runs``,
    ``settings``, the ``drawn`` figures, ``timing``, ``resumed``, provenance). Every file is written
    atomically, so a reader never sees half of one.
    """
    write_npz(out / "results.npz", arrays)
    point_keys = sorted({k for r in runs for k in r["point"]})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*RUN_COLUMNS, *point_keys, *columns])
    for i, run in enumerate(runs):
        lead = [run[k] for k in RUN_COLUMNS] + [run["point"].get(k, "") for k in point_keys]
        writer.writerows([*lead, *row] for row in rows(i, run))
    atomic_write(out / "results.csv", buf.getvalue().encode())
    summary = {
        "name": cfg.name,
        **fields,
        "runs": runs,
        "settings": settings,
        "figures": [p.name for p in drawn],
        **timing,
        "resumed": resumed,
        **provenance(source),
    }
    atomic_write(out / "config.yaml", cfgmod.dump_config(cfg).encode())
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    return summary
