"""Overrides applied to a config's raw YAML, then every section checked (one-line errors)."""

from __future__ import annotations

import string
from dataclasses import replace

from gradflow.config.schema import (
    _CELL_KEYS,
    _FREE_MAPPINGS,
    _MEASURE_ONLY,
    _MISSING,
    _REGISTRIES,
    _SECTIONS,
    _SIZE_OPTIONS,
    _TASK_KEYS,
    DISTRIBUTIONS,
    FORMATS,
    LOSSES,
    MEASURES,
    READOUTS,
    CellSpec,
    Config,
    ConfigError,
    Fit,
    Inputs,
    Output,
    Sweep,
    TaskSpec,
    Train,
    _check,
    _choice,
    _float,
    _FrozenDict,
    _int,
    _Invalid,
    _list,
    _message,
    _plain,
    _section,
    _show,
    _text,
    config_to_dict,
)


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
