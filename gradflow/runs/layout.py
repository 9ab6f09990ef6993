"""What a finished run directory holds, and reading back the groups finished so far (``.parts``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradflow import figures
from gradflow.rundir import PARTS

RESULT_FILES = ("config.yaml", "results.npz", "results.csv", "summary.json")
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


def unfinished(out: Path, groups: list[dict], progress=None):
    """``(index, group)`` of each group with no ``out/.parts/<index>.npz`` yet: the one resume rule
    of measuring and training runs. A finished group is reported to ``progress(i, n, label,
    skipped=True)`` instead."""
    for g_idx, group in enumerate(groups):
        if (out / PARTS / f"{g_idx}.npz").exists():
            if progress:
                progress(g_idx, len(groups), group["label"], skipped=True)
            continue
        yield g_idx, group
