"""Where a ``Monitor`` writes: JSONL and CSV always, TensorBoard (tensorboardX) and Weights & Biases
when asked. All inside one log directory that gradflow owns (``rundir`` rules: it never writes into a
folder holding files it did not write, and replaces only its own files)."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
from pathlib import Path

from gradflow.rundir import Manifest, RunDirError, open_dir

JSONL, CSV, TENSORBOARD, WANDB = "monitor.jsonl", "monitor.csv", "tensorboard", "wandb"


def _finite(record: dict) -> dict:
    return {k: v for k, v in record.items() if math.isfinite(v)}


class JsonlSink:
    """One JSON object per logged update: ``{"step", <stats>..., "sentences": [...]}``; NaN/inf as
    null (strict JSON)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = self.path.open("a")

    def write(self, step: int, record: dict, sentences: list[str]) -> None:
        row = {"step": step, **{k: v if math.isfinite(v) else None for k, v in record.items()}}
        self.file.write(json.dumps({**row, "sentences": list(sentences)}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CsvSink:
    """``step``, then the first logged update's statistics as columns (later keys not in it are left
    out), then ``sentences`` joined by `` | ``; NaN as an empty cell."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = self.path.open("a", newline="")
        self.columns: list[str] | None = None
        self.writer = None

    def write(self, step: int, record: dict, sentences: list[str]) -> None:
        if self.writer is None:
            self.columns = ["step", *record, "sentences"]
            self.writer = csv.DictWriter(self.file, self.columns, extrasaction="ignore", restval="")
            if self.file.tell() == 0:
                self.writer.writeheader()
        row = {k: (repr(v) if math.isfinite(v) else "") for k, v in record.items()}
        self.writer.writerow({"step": step, **row, "sentences": " | ".join(sentences)})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _optional(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this sink needs {module}: pip install 'gradflow[{extra}]'") from None


class TensorBoardSink:
    """TensorBoard event files through ``tensorboardX`` (no TensorFlow): every finite statistic as a
    scalar, the detector's sentences as text under ``detector``."""

    def __init__(self, folder: Path):
        tbx = _optional("tensorboardX", "tensorboard")
        self.writer = tbx.SummaryWriter(logdir=str(folder))

    def write(self, step: int, record: dict, sentences: list[str]) -> None:
        for key, value in _finite(record).items():
            self.writer.add_scalar(key, value, global_step=step)
        if sentences:
            self.writer.add_text("detector", "\n\n".join(sentences), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A Weights & Biases run (``wandb.init(dir=<logdir>)``, which writes ``<logdir>/wandb/``;
    ``WANDB_MODE=offline`` works without a network): every finite statistic per step, the sentences as
    ``detector`` text."""

    def __init__(self, folder: Path, project: str, name: str | None, config: dict | None):
        wandb = _optional("wandb", "wandb")
        self.run = wandb.init(
            project=project, name=name, dir=str(folder), config=config or {}, reinit="create_new"
        )

    def write(self, step: int, record: dict, sentences: list[str]) -> None:
        row = _finite(record)
        if sentences:
            row["detector"] = "\n".join(sentences)
        self.run.log(row, step=step)

    def close(self) -> None:
        self.run.finish()


def sinks(
    logdir: str | os.PathLike,
    *,
    tensorboard: bool = False,
    wandb: bool = False,
    project: str = "gradflow",
    name: str | None = None,
    config: dict | None = None,
    overwrite: bool = False,
) -> list:
    """The sinks of a ``Monitor`` in ``logdir``: ``monitor.jsonl`` and ``monitor.csv`` always,
    ``tensorboard/`` event files and a ``wandb/`` run when asked.

    ``logdir`` is new or empty, or a monitor log gradflow wrote (then ``overwrite=True`` replaces
    gradflow's files in it); anything else is refused with one line (``RunDirError``).

    Example::

        monitor = gradflow.Monitor(every=10, sinks=gradflow.sinks("runs/watch", tensorboard=True))
    """
    manifest, existed = open_dir(Path(logdir), "monitor")
    if existed:
        if manifest.kind != "monitor":
            raise RunDirError(
                f"{logdir}: is a gradflow {manifest.kind} directory, not a monitor log; choose another"
            )
        if not overwrite and manifest.entries:
            raise RunDirError(f"{logdir}: already holds a monitor log; pass overwrite=True or choose another")
        manifest.remove()
    out: list = []
    _add(manifest, JSONL, "file", lambda: JsonlSink(manifest.root / JSONL), out)
    _add(manifest, CSV, "file", lambda: CsvSink(manifest.root / CSV), out)
    if tensorboard:
        _add(manifest, TENSORBOARD, "scratch", lambda: TensorBoardSink(manifest.root / TENSORBOARD), out)
    if wandb:
        _add(manifest, WANDB, "scratch", lambda: WandbSink(manifest.root, project, name, config), out)
    return out


class _Settled:
    """A sink whose writer fills a ``"scratch"`` folder: on ``close`` the manifest lists what the
    folder holds (``Manifest.settle``), so a later ``overwrite=True`` removes only those files."""

    def __init__(self, sink, manifest: Manifest, name: str):
        self.sink, self.manifest, self.name = sink, manifest, name

    def write(self, step: int, record: dict, sentences: list[str]) -> None:
        self.sink.write(step, record, sentences)

    def close(self) -> None:
        self.sink.close()
        self.manifest.settle(self.name)


def _add(manifest: Manifest, name: str, kind: str, make, out: list) -> None:
    manifest.record(name, kind=kind)  # listed before it is written
    try:
        sink = make()
        out.append(_Settled(sink, manifest, name) if kind == "scratch" else sink)
    except BaseException:
        for sink in out:
            sink.close()
        raise
