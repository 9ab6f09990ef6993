"""Experiment configs: YAML read with ``yaml.safe_load`` into frozen dataclasses.

All keys but ``name`` and ``cells`` have defaults; dotted overrides
(``--set inputs.steps=50``) apply before validation; every problem raises a
``ConfigError`` whose one-line message names the file (or the ``--set`` text),
the key path, the value and what was expected. A cell ``label`` may hold
``{option}`` placeholders, filled from that cell's options as resolved after
``--quick`` and ``--set`` (defaults included), so a label never states a size
the run did not use. Example config::

    # command: gradflow run configs/compare_cells.yaml  (~10 s on a laptop CPU;
    # the figure shows log10 ||dL/dh_t|| against t, one line per cell)
    name: compare_cells
    cells:
      - {label: tanh RNN, cell: rnn, options: {hidden_size: 64}}
      - {label: "LSTM x{hidden_size}", cell: lstm, options: {hidden_size: 64, forget_bias: 1.0}}
    inputs: {steps: 200, batch: 16}
    sweep: {grid: {cells.0.options.weight_scale: [0.5, 1.0, 2.0]}, seeds: [0, 1]}
    quick: {inputs.steps: 20, sweep.grid.cells.0.options.weight_scale: [1.0]}
"""

from __future__ import annotations

import itertools
import math
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, NamedTuple

import yaml

MEASURES = ("gradient_norms",)
LOSSES = ("final", "every_step", "readout")
DISTRIBUTIONS = ("normal", "uniform", "zeros")
FORMATS = ("png", "svg", "pdf")
_SIZE_OPTIONS = ("hidden_size", "width", "depth", "num_layers")  # cell options that are integers >= 1
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # YAML 1.1 reads 1e-3 as a string


class Registries(NamedTuple):
    """The names a config is checked against, handed in by the runner: this module imports nothing
    from gradflow (``gradflow.experiment.REGISTRIES`` is the one the library uses).

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


def load_config(
    path: str | os.PathLike, overrides: Sequence[str] = (), quick: bool = False, *, registries: Registries
) -> Config:
    """Read, override and validate the YAML config at ``path`` against ``registries``.

    ``overrides`` are ``"key.path=value"`` strings (``--set``; the value is read
    with ``yaml.safe_load``, list indices are path parts). ``quick=True``
    applies the file's ``quick`` overrides first, then ``overrides``. The quick
    overrides and every sweep-grid value are validated either way.

    Example::

        cfg = load_config("configs/x.yaml", ["inputs.steps=50", "sweep.seeds=[0, 1]"], registries=reg)
        cfg.inputs.steps, cfg.sweep.seeds  # (50, (0, 1))
    """
    token = _REGISTRIES.set(registries)
    try:
        return _load(os.fspath(path), overrides, quick)
    finally:
        _REGISTRIES.reset(token)


def _load(source: str, overrides, quick: bool) -> Config:
    data = _read_yaml(source)
    sets = [_parse_set(text) for text in ([overrides] if isinstance(overrides, str) else overrides)]
    base = _resolve(data, sets, source, source)
    quick_sets = [(f"{source}: quick[{key!r}]", key, _plain(value)) for key, value in base.quick.items()]
    quick_cfg = _resolve(data, quick_sets + sets, source, f"{source} (with its quick overrides)")
    return quick_cfg if quick else base


def config_to_dict(cfg: Config) -> dict:
    """Plain dicts, lists and scalars in file order: ``config_to_dict(cfg)["inputs"]["steps"]``."""
    plain = _plain(cfg)
    skip = _MEASURE_ONLY if cfg.task is not None else ("task", "train")
    return {key: plain[key] for key in _SECTIONS if key not in skip}


def dump_config(cfg: Config) -> str:
    """YAML text that ``load_config`` reads back to an equal ``Config``.

    Example::

        Path(cfg.output.dir, "config.yaml").write_text(dump_config(cfg))
    """
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def sweep_points(cfg: Config, *, registries: Registries) -> list[tuple[dict, Config]]:
    """Expand ``cfg.sweep.grid`` into ``[(point, point_cfg)]``, one per combination (each point
    validated against ``registries``, as ``load_config`` does).

    ``point`` is ``{path: value}``; ``point_cfg`` is ``cfg`` with it applied and an
    empty grid. Grid keys vary in file order, the last fastest (``itertools.product``);
    an empty grid gives ``[({}, cfg)]``. Seeds are not expanded.

    Example::

        # sweep: {grid: {inputs.steps: [50, 100], cells.0.options.weight_scale: [0.5, 1, 2]}}
        [point for point, _ in sweep_points(cfg, registries=reg)][:2]
        # [{'inputs.steps': 50, 'cells.0...': 0.5}, {'inputs.steps': 50, 'cells.0...': 1.0}]
    """
    grid, raw = cfg.sweep.grid, config_to_dict(cfg)
    raw["sweep"]["grid"] = {}
    points = []
    token = _REGISTRIES.set(registries)
    try:
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values, strict=True))
            label = f"{cfg.name}: sweep point {point}"
            sets = [(label, k, _plain(v)) for k, v in point.items()]
            points.append((point, _resolve(raw, sets, label, label)))
    finally:
        _REGISTRIES.reset(token)
    return points


def _read_yaml(source: str):
    if os.path.isdir(source):
        raise ConfigError(f"{source}: is a directory; expected a YAML config file")
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source}: cannot read the config: {getattr(err, 'strerror', 0) or err}") from None
    try:
        _check_unique_keys(yaml.compose(text, Loader=yaml.SafeLoader))  # nodes only, nothing is built
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"{source}: {where}invalid YAML: {problem}") from None


def _check_unique_keys(node, visited=None) -> None:
    """Reject a key repeated in a mapping (``safe_load`` would silently keep the last one)."""
    visited = set() if visited is None else visited
    if not isinstance(node, yaml.CollectionNode) or id(node) in visited:
        return
    visited.add(id(node))
    pairs = node.value if isinstance(node, yaml.MappingNode) else [(None, child) for child in node.value]
    keys = [(k.tag, k.value) if isinstance(k, yaml.ScalarNode) else id(k) for k, _ in pairs]
    for i, (key, child) in enumerate(pairs):
        if key is not None and keys[i] in keys[:i]:
            raise yaml.MarkedYAMLError(problem=f"duplicate key {key.value!r}", problem_mark=key.start_mark)
        _check_unique_keys(key, visited)
        _check_unique_keys(child, visited)


def _parse_set(text: str) -> tuple[str, str, Any]:
    label = f"--set {text}"
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{label}: expected KEY=VALUE, e.g. --set inputs.steps=50")
    try:
        return label, key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"{label}: cannot read the value {value!r} as YAML") from None


def _resolve(data, sets, source: str, label: str) -> Config:
    """Fill defaults into ``data``, apply ``sets`` ``[(label, path, value)]``, validate.

    A validation error is blamed on the override whose path contains, lies inside,
    or else shares the most parts (at least 2) with the bad key path; if none, on ``label``.
    """
    try:
        raw = _fill(data)
    except _Invalid as err:
        raise ConfigError(_message(source, err)) from None
    for set_label, path, value in sets:
        try:
            _apply(raw, path, value)
        except _Invalid as err:
            raise ConfigError(_message(set_label, err, path)) from None
    try:
        return _validate(_fill(raw), source)  # fill again: an override may replace a whole section
    except _Invalid as err:
        blamed, best = (label, None), 2
        for set_label, path, _ in sets:  # 99 parts shared: one path inside the other
            a, b = path.split("."), err.path.split(".")
            shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 99)
            blamed, best = ((set_label, path), shared) if shared >= best else (blamed, best)
        raise ConfigError(_message(blamed[0], err, blamed[1])) from None


def _fill(data) -> dict:
    """A fresh copy of ``data`` with the defaults, unknown keys rejected, missing ones ``_MISSING``."""
    if not isinstance(data, dict):
        shown = "empty" if data is None else f"a {type(data).__name__}"
        raise _Invalid("", data, text=f"the top level is {shown}; expected a mapping with name and cells")
    _known_keys(data, _SECTIONS, "", "at top level")
    raw = {}
    for key, default in _SECTIONS.items():
        raw[key] = value = _plain(data.get(key, default))
        if isinstance(default, dict) and value is None:
            raw[key] = value = {}
        if default and isinstance(value, dict):  # quick's keys are free: dotted paths
            _known_keys(value, default, f"{key}.", f"in {key}")
            raw[key] = {**_plain(default), **value}
    for i, entry in enumerate(raw["cells"] if isinstance(raw["cells"], list) else ()):
        if isinstance(entry, dict):
            _known_keys(entry, _CELL_KEYS, f"cells.{i}.", f"in cells.{i}")
            entry.setdefault("label", None)
            entry["options"] = {} if entry.get("options") is None else entry["options"]
    if isinstance(raw["task"], dict):
        _known_keys(raw["task"], _TASK_KEYS, "task.", "in task")
        raw["task"].setdefault("name", _MISSING)
        raw["task"]["options"] = {} if raw["task"].get("options") is None else raw["task"]["options"]
    return raw


def _known_keys(mapping: dict, known, prefix: str, where: str) -> None:
    for key, value in mapping.items():
        if key not in known:
            text = f"unknown key {key!r} {where}; expected one of {list(known)}"
            raise _Invalid(f"{prefix}{key}", value, text=text)


def _apply(raw: dict, path: str, value) -> None:
    """Set ``raw[path] = value``; the path must exist, except a new cell option (validated later)."""
    parts, node, walked = path.split("."), raw, []
    for i, part in enumerate(parts):
        where, last = ".".join(walked) or "top level", i == len(parts) - 1
        new_option = last and (
            (walked[:1] == ["cells"] and walked[2:3] == ["options"]) or walked in _FREE_MAPPINGS
        )
        if walked == ["quick"]:
            raise _Invalid(path, value, text="quick overrides can only be changed in the config file")
        if walked == ["sweep", "grid"] and isinstance(node, dict):  # its keys are dotted paths, may be new
            part, last = ".".join(parts[i:]), True
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise _Invalid(path, value, text=f"no index {part!r} in {where} (a list of {len(node)})")
            part = int(part)
        elif not isinstance(node, dict):
            raise _Invalid(path, value, text=f"{where} is {_show(node)}, not a mapping or a list")
        elif part not in node and not new_option:
            where = f"in {where}" if walked else "at top level"
            raise _Invalid(path, value, text=f"unknown key {part!r} {where}; expected one of {list(node)}")
        if last:
            node[part] = value
            return
        node = node[part]
        walked.append(str(part))


def _validate(raw: dict, source: str) -> Config:
    name = _check(raw["name"], "name", _text(raw["name"]), "a non-empty string")
    inp, fit, sweep, out = (_section(raw, key) for key in ("inputs", "fit", "sweep", "output"))
    window, grid, quick, out_dir = fit["window"], sweep["grid"], raw["quick"], out["dir"]
    if window is not None:
        _check(window, "fit.window", isinstance(window, list) and len(window) == 2, "null or [k_min, k_max]")
        k_min, k_max = _int(window[0], "fit.window.0", 0), _int(window[1], "fit.window.1", 1)
        _check(window, "fit.window", k_min < k_max, "[k_min, k_max] with k_min < k_max")
    ok = isinstance(grid, dict) and all(map(_text, grid))  # the paths are checked when applied
    _check(grid, "sweep.grid", ok, "a mapping {dotted.key.path: [values, ...]}")
    ok = isinstance(quick, dict) and all(map(_text, quick))
    _check(quick, "quick", ok, "a mapping {dotted.key.path: value}")
    out_dir = f"runs/{name}" if out_dir is None else out_dir
    _check(out_dir, "output.dir", _text(out_dir), "a non-empty path")
    cfg = Config(
        name=name,
        cells=_cell_specs(raw["cells"], grid if isinstance(grid, dict) else {}, source),
        inputs=Inputs(
            size=_int(inp["size"], "inputs.size", 1),
            steps=_int(inp["steps"], "inputs.steps", 1),
            batch=_int(inp["batch"], "inputs.batch", 1),
            distribution=_choice(inp["distribution"], "inputs.distribution", DISTRIBUTIONS),
            scale=_float(inp["scale"], "inputs.scale", 0.0),
        ),
        loss=_choice(raw["loss"], "loss", LOSSES),
        measures=_list(raw["measures"], "measures", lambda v, p: _choice(v, p, MEASURES)),
        fit=Fit(None if window is None else tuple(window)),
        sweep=Sweep(seeds=_list(sweep["seeds"], "sweep.seeds", lambda v, p: _int(v, p, 0))),
        output=Output(
            dir=out_dir,
            formats=_list(out["formats"], "output.formats", lambda v, p: _choice(v, p, FORMATS)),
        ),
        quick=_plain(quick, frozen=True),
    )
    if raw["task"] is not None:
        cfg = replace(cfg, task=_task_spec(raw["task"]), train=_train(_section(raw, "train")))
        for key in _MEASURE_ONLY:
            if raw[key] != _plain(_SECTIONS[key]):
                text = f"{key} does not apply to a training config (the task makes the inputs and the loss)"
                raise _Invalid(key, raw[key], text=text)
        steps = _task_steps(cfg.task)
        for i, spec in enumerate(cfg.cells):
            if _REGISTRIES.get().check_cell(spec.cell, dict(spec.options)) and steps != 1:
                text = (
                    f"cells.{i}.cell = {spec.cell!r} is a depth stack; it trains on a feed-forward task "
                    f"(steps 1, e.g. teacher), task {cfg.task.name!r} has {steps} steps"
                )
                raise _Invalid(f"cells.{i}.cell", spec.cell, text=text)
    cfg = replace(cfg, sweep=replace(cfg.sweep, grid=_grid(raw, grid, source)))
    if window is not None and raw["task"] is None:
        _window_within_steps(cfg, window)
    return cfg


def _window_within_steps(cfg: Config, window) -> None:
    """``fit.window``'s k_max must not exceed T: ``inputs.steps``, or the depth of a depth stack
    (each sweep point is validated as a config of its own, so every point is checked)."""
    lengths = {}  # T: the key it comes from
    for i, spec in enumerate(cfg.cells):
        known = _REGISTRIES.get().cell_options(spec.cell)
        if "depth" in known:
            lengths.setdefault(spec.options.get("depth", known["depth"]), f"cells.{i}.options.depth")
        else:
            lengths.setdefault(cfg.inputs.steps, "inputs.steps")
    steps = min(lengths)
    if window[1] > steps:
        text = (
            f"fit.window = {list(window)}: k_max {window[1]} is beyond T = {steps} ({lengths[steps]}); "
            "expected k_max <= T"
        )
        raise _Invalid("fit.window", list(window), text=text)


def _task_spec(value) -> TaskSpec:
    _check(value, "task", isinstance(value, dict), f"a mapping with keys {list(_TASK_KEYS)}")
    reg = _REGISTRIES.get()
    name = value["name"]
    names = reg.task_names()
    _check(name, "task.name", isinstance(name, str) and name in names, f"one of {names}")
    options = value["options"]
    known = reg.task_options(name)
    _check(options, "task.options", isinstance(options, dict), f"a mapping of options of task {name!r}")
    for key, v in options.items():
        if key not in known:
            where = f"task.options.{key}; expected one of {list(known)}"
            text = f"unknown option {key!r} of task {name!r} at {where}"
            raise _Invalid(f"task.options.{key}", v, text=text)
        default = known[key]
        if isinstance(default, int) and not isinstance(default, bool):
            _int(v, f"task.options.{key}", 1)
        elif isinstance(default, str) or default is None:
            _check(v, f"task.options.{key}", isinstance(v, str), "a string")
    spec = TaskSpec(name, _plain(options, frozen=True))
    _task_steps(spec)
    return spec


def _task_steps(spec: TaskSpec) -> int:
    """The task's number of steps (building it: a bad option is a one-line error)."""
    try:
        return _REGISTRIES.get().check_task(spec.name, dict(spec.options))
    except (ValueError, TypeError, OSError) as err:
        text = f"task.options = {_show(spec.options)}: tasks.get({spec.name!r}, ...) says: {err}"
        raise _Invalid("task.options", spec.options, text=text) from None


def _train(t: dict) -> Train:
    p = "train."
    lr = _float(t["learning_rate"], p + "learning_rate", 0.0)
    _check(lr, p + "learning_rate", lr > 0, "a number > 0")
    clip = None if t["clip"] is None else _float(t["clip"], p + "clip", 0.0)
    _check(clip, p + "clip", clip is None or clip > 0, "null (off) or a number > 0")
    steps, every = _int(t["steps"], p + "steps", 1), _int(t["eval_every"], p + "eval_every", 1)
    _check(steps, p + "steps", steps % every == 0, f"a multiple of train.eval_every ({every})")
    ckpt = t["checkpoint_every"]
    if ckpt is not None:
        _int(ckpt, p + "checkpoint_every", 1)
        _check(
            ckpt,
            p + "checkpoint_every",
            ckpt % every == 0,
            f"null or a multiple of train.eval_every ({every})",
        )
    reg = _REGISTRIES.get()
    name = _choice(t["optimizer"], p + "optimizer", reg.optimizers)
    opt_options = t["optimizer_options"]
    _check(
        opt_options, p + "optimizer_options", isinstance(opt_options, dict), "a mapping of optax arguments"
    )
    opt_options = {
        k: _float(v, f"{p}optimizer_options.{k}") if isinstance(v, str) else v for k, v in opt_options.items()
    }
    try:
        reg.check_optimizer(name, opt_options)
    except ValueError as err:
        raise _Invalid(p + "optimizer_options", opt_options, text=f"{p}optimizer_options: {err}") from None
    schedule, sched_options = t["schedule"], t["schedule_options"]
    if schedule is not None:
        _choice(schedule, p + "schedule", list(reg.schedules))
    _check(
        sched_options, p + "schedule_options", isinstance(sched_options, dict), "a mapping of optax arguments"
    )
    try:
        reg.check_schedule(schedule, sched_options)
    except ValueError as err:
        raise _Invalid(p + "schedule_options", sched_options, text=f"{p}schedule_options: {err}") from None
    fraction = _float(t["solved_fraction"], p + "solved_fraction", 0.0)
    _check(fraction, p + "solved_fraction", 0 < fraction <= 1, "a number in (0, 1]")
    _check(t["early_stop"], p + "early_stop", isinstance(t["early_stop"], bool), "true or false")
    train = Train(
        steps=steps,
        batch=_int(t["batch"], p + "batch", 1),
        optimizer=name,
        learning_rate=lr,
        optimizer_options=_plain(opt_options, frozen=True),
        schedule=schedule,
        schedule_options=_plain(sched_options, frozen=True),
        clip=clip,
        eval_every=every,
        eval_batch=_int(t["eval_batch"], p + "eval_batch", 1),
        solved_fraction=fraction,
        early_stop=t["early_stop"],
        readout=_choice(t["readout"], p + "readout", READOUTS),
        checkpoint_every=ckpt,
    )
    return train


def _grid(raw: dict, grid: dict, source: str) -> _FrozenDict:
    """Check each grid value by applying it alone; keep the values as validated (e.g. 1 -> 1.0)."""
    checked = {}
    for key, values in grid.items():
        if key.split(".")[0] in ("sweep", "quick"):
            raise _Invalid(
                f"sweep.grid.{key}",
                values,
                text=f"sweep.grid key {key!r}: expected a path outside sweep and quick",
            )
        _check(values, f"sweep.grid.{key}", isinstance(values, list) and values, "a non-empty list")
        checked[key] = []
        for i, value in enumerate(values):
            point = {**raw, "sweep": {**raw["sweep"], "grid": {}}}
            label = f"{source}: sweep.grid[{key!r}][{i}]"
            resolved = config_to_dict(_resolve(point, [(label, key, _plain(value))], source, label))
            for part in key.split("."):
                resolved = resolved[int(part)] if isinstance(resolved, list) else resolved[part]
            checked[key].append(resolved)
    return _plain(checked, frozen=True)


def _fill_label(label: str, cell: str, options: dict, swept, path: str, source: str) -> str:
    """``label`` with its ``{option}`` placeholders filled from the cell's resolved options."""
    known = {**_REGISTRIES.get().cell_options(cell), **options}
    where = f"{source}: {path}.label {label!r}"
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(label) if name is not None]
    except ValueError as err:
        raise ConfigError(f"{where}: {err}; write {{option}}, e.g. {{{next(iter(known))}}}") from None
    for name in names:
        if name not in known:
            raise ConfigError(f"{where}: unknown placeholder {{{name}}}; known options: {list(known)}")
        if name in swept:
            text = f"{where}: placeholder {{{name}}} names a swept option (the figure adds the sweep value)"
            raise ConfigError(text)
    return label.format_map(known) if names else label


def _cell_specs(value, grid: dict, source: str) -> tuple[CellSpec, ...]:
    _check(value, "cells", isinstance(value, list) and value, "a non-empty list of {label, cell, options}")
    specs, labels = [], {}
    for i, entry in enumerate(value):
        path = f"cells.{i}"
        _check(entry, path, isinstance(entry, dict), f"a mapping with keys {list(_CELL_KEYS)}")
        cell = entry.get("cell", _MISSING)
        names = _REGISTRIES.get().cell_names()
        ok = isinstance(cell, str) and cell in names
        _check(cell, f"{path}.cell", ok, f"a cell name, one of {names}")
        label = cell if entry["label"] is None else entry["label"]
        _check(label, f"{path}.label", _text(label), "a non-empty string")
        options = _cell_options(cell, entry["options"], f"{path}.options")
        swept = {k.split(".")[-1] for k in grid if str(k).startswith(f"{path}.options.")}
        label = _fill_label(label, cell, options, swept, path, source)
        unique = f"a unique label (cells.{labels.get(label)} has it)"
        _check(label, f"{path}.label", label not in labels, unique)
        labels[label] = i
        try:
            _REGISTRIES.get().check_cell(cell, options)
        except (ValueError, TypeError) as err:
            text = f"{path}.options = {_show(options)}: cells.get({cell!r}, ...) says: {err}"
            raise _Invalid(f"{path}.options", options, text=text) from None
        specs.append(CellSpec(label, cell, _plain(options, frozen=True)))
    return tuple(specs)


def _cell_options(cell: str, value, path: str) -> dict:
    """Type-check each option against its default in ``cells.options(cell)`` (ints become floats)."""
    known = _REGISTRIES.get().cell_options(cell)
    _check(value, path, isinstance(value, dict), f"a mapping of options of cell {cell!r}: {list(known)}")
    options = {}
    for key, v in value.items():
        p, default = f"{path}.{key}", known.get(key)
        if key not in known:
            text = f"unknown option {key!r} of cell {cell!r} at {p}; expected one of {list(known)}"
            raise _Invalid(p, v, text=text)
        if key in _SIZE_OPTIONS:
            v = _int(v, p, 1)
        elif isinstance(default, bool):
            _check(v, p, isinstance(v, bool), "true or false")
        elif isinstance(default, float) or (key == "alpha" and v is not None):
            v = _float(v, p)
        elif isinstance(default, str):
            _check(v, p, isinstance(v, str), "a string")
        elif key == "cell_options":
            _check(v, p, v is None or isinstance(v, dict), "null or a mapping of the inner cell's options")
        options[key] = v
    size = next(iter(known))
    if size not in options:
        raise _Invalid(f"{path}.{size}", _MISSING, f"an integer >= 1 (cell {cell!r} needs {size})")
    return options


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
