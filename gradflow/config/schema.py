"""The config's data: frozen dataclasses, the registries it is checked against, value checks."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, NamedTuple

MEASURES = ("gradient_norms",)
LOSSES = ("final", "every_step", "readout")
DISTRIBUTIONS = ("normal", "uniform", "zeros")
FORMATS = ("png", "svg", "pdf")
_SIZE_OPTIONS = ("hidden_size", "width", "depth", "num_layers")  # cell options that are integers >= 1
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # YAML 1.1 reads 1e-3 as a string


class Registries(NamedTuple):
    """The names a config is checked against, handed in by the runner: this module imports nothing
    from gradflow (``gradflow.runs.configs.REGISTRIES`` is the one the library uses).

    ``cell_options(name)`` / ``task_options(name)``: ``{option: default}`` (None: required, the
    size option first). ``check_cell(name, options)`` builds the cell (raising ``ValueError`` or
    ``TypeError``) and says whether it is a depth stack; ``check_task(name, options)`` builds the task
    and returns its number of steps; ``check_optimizer``/``check_schedule`` raise ``ValueError``.
    """

    cell_names: Callable[[], list]
    cell_options: Callable[[str], dict]
    check_cell: Callable[[str, dict], bool]
    task_names: Callable[[], list]
    task_options: Callable[[str], dict]
    check_task: Callable[[str, dict], int]
    optimizers: Sequence[str]
    schedules: Sequence[str]
    check_optimizer: Callable[[str, Mapping], None]
    check_schedule: Callable[[str | None, Mapping], None]


_REGISTRIES: ContextVar[Registries] = ContextVar("gradflow_config_registries")


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line: where, which key, what was expected."""


class _FrozenDict(dict):
    """A read-only, hashable ``dict``: configs are immutable all the way down."""

    def _read_only(self, *args, **kwargs):
        raise TypeError("config mappings are read-only; use load_config(path, overrides)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self):
        return hash(frozenset(self.items()))

    def __reduce__(self):
        return (_FrozenDict, (dict(self),))


@dataclass(frozen=True)
class CellSpec:
    """One line on the plot: ``cells.get(cell, **options)`` under ``label``."""

    label: str
    cell: str
    options: Mapping[str, Any] = field(default_factory=_FrozenDict)


@dataclass(frozen=True)
class Inputs:
    """Random inputs ``xs: [steps, batch, size]`` (residual/plain stacks: ``steps`` is the depth)."""

    size: int = 8
    steps: int = 200
    batch: int = 16
    distribution: str = "normal"
    scale: float = 1.0


@dataclass(frozen=True)
class Fit:
    """Decay-fit window ``(k_min, k_max)`` in steps back from the loss; ``None``: all steps."""

    window: tuple[int, int] | None = None


@dataclass(frozen=True)
class Sweep:
    """``grid``: dotted key path -> values (cartesian product); ``seeds``: each point runs per seed."""

    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=_FrozenDict)
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Output:
    """Where figures and the resolved config go (default ``runs/<name>``), in which formats."""

    dir: str
    formats: tuple[str, ...] = ("png", "svg")


@dataclass(frozen=True)
class TaskSpec:
    """A training config's task: ``gradflow.tasks.get(name, **options)``."""

    name: str
    options: Mapping[str, Any] = field(default_factory=_FrozenDict)


READOUTS = ("auto", "every", "last")


@dataclass(frozen=True)
class Train:
    """How a training config trains; also the one settings type of training
    (``gradflow.training.Settings`` is this class; ``learn.optim.check_settings`` checks the names).

    ``learning_rate`` and ``clip`` (global-norm clipping threshold, null: off) may differ between
    runs that still share one compiled step. ``readout``: 'auto' reads out at the last step for tasks
    scored there (adding, temporal_order), else at every step. ``checkpoint_every``: steps between
    checkpoints (null: every ``eval_every``).
    """

    steps: int = 1000
    batch: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    optimizer_options: Mapping[str, Any] = field(default_factory=_FrozenDict)
    schedule: str | None = None
    schedule_options: Mapping[str, Any] = field(default_factory=_FrozenDict)
    clip: float | None = None
    eval_every: int = 100
    eval_batch: int = 512
    solved_fraction: float = 0.1
    early_stop: bool = True
    readout: str = "auto"
    checkpoint_every: int | None = None


@dataclass(frozen=True)
class Config:
    """One experiment; make it with ``load_config``. With a ``task`` it is a training config."""

    name: str
    cells: tuple[CellSpec, ...]
    output: Output
    inputs: Inputs = Inputs()
    loss: str = "final"
    measures: tuple[str, ...] = ("gradient_norms",)
    fit: Fit = Fit()
    sweep: Sweep = Sweep()
    quick: Mapping[str, Any] = field(default_factory=_FrozenDict)
    task: TaskSpec | None = None
    train: Train = Train()


_MISSING = object()
_SECTIONS = {  # top-level key -> default (_MISSING: required); mapping sections are merged per key
    "name": _MISSING,
    "cells": _MISSING,
    "task": None,
    "train": {f.name: {} if f.name.endswith("_options") else f.default for f in fields(Train)},
    "inputs": {f.name: f.default for f in fields(Inputs)},
    "loss": "final",
    "measures": ["gradient_norms"],
    "fit": {"window": None},
    "sweep": {"grid": {}, "seeds": [0]},
    "output": {"dir": None, "formats": ["png", "svg"]},
    "quick": {},
}
_CELL_KEYS = ("label", "cell", "options")
_TASK_KEYS = ("name", "options")
_MEASURE_ONLY = ("inputs", "loss", "measures", "fit")  # sections a training config does not use
_FREE_MAPPINGS = (["task", "options"], ["train", "optimizer_options"], ["train", "schedule_options"])


class _Invalid(Exception):
    """Internal: ``path`` holds ``value`` but ``expected`` (or a ready-made one-line ``text``)."""

    def __init__(self, path: str, value, expected: str = "", text: str = ""):
        super().__init__(path)
        self.path, self.value, self.expected, self.text = path, value, expected, text


def _check(value, path: str, ok, expected: str):
    if not ok:
        raise _Invalid(path, value, expected)
    return value


def _section(raw: dict, key: str) -> dict:
    return _check(raw[key], key, isinstance(raw[key], dict), f"a mapping with keys {list(_SECTIONS[key])}")


def _text(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _int(v, path: str, minimum: int) -> int:
    return _check(
        v, path, isinstance(v, int) and not isinstance(v, bool) and v >= minimum, f"an integer >= {minimum}"
    )


def _float(v, path: str, minimum: float | None = None) -> float:
    if isinstance(v, str) and _NUMBER.fullmatch(v.strip()):
        v = float(v)
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (minimum is None or v >= minimum)
    return float(_check(v, path, ok, "a number" + ("" if minimum is None else f" >= {minimum:g}")))


def _choice(v, path: str, choices) -> str:
    return _check(v, path, isinstance(v, str) and v in choices, f"one of {list(choices)}")


def _list(v, path: str, item) -> tuple:
    _check(v, path, isinstance(v, list) and v, "a non-empty list")
    items = tuple(item(x, f"{path}.{i}") for i, x in enumerate(v))
    for i, x in enumerate(items):
        _check(x, f"{path}.{i}", x not in items[:i], f"a value not already in {path} (no duplicates)")
    return items


def _plain(value, frozen: bool = False):
    """A fresh copy made of dicts, lists and scalars (``frozen``: of ``_FrozenDict`` and tuples)."""
    if is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, Mapping):
        return (_FrozenDict if frozen else dict)({k: _plain(v, frozen) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return (tuple if frozen else list)(_plain(v, frozen) for v in value)
    return value


def _show(value) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(_plain(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _message(label: str, err: _Invalid, own_path: str | None = None) -> str:
    if err.text:
        text = f"{label}: {err.text}"
    elif err.path == own_path:
        text = f"{label}: expected {err.expected}, got {_show(err.value)}"
    elif err.value is _MISSING:
        text = f"{label}: {err.path} is missing: expected {err.expected}"
    else:
        text = f"{label}: {err.path} = {_show(err.value)}: expected {err.expected}"
    return " ".join(text.split())  # one line


def config_to_dict(cfg: Config) -> dict:
    """Plain dicts, lists and scalars in file order: ``config_to_dict(cfg)["inputs"]["steps"]``."""
    plain = _plain(cfg)
    skip = _MEASURE_ONLY if cfg.task is not None else ("task", "train")
    return {key: plain[key] for key in _SECTIONS if key not in skip}
