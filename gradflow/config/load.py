"""Reading a YAML config, applying ``--set`` and ``--quick``, writing it back, expanding its sweep."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import yaml

from gradflow.config.schema import (
    _REGISTRIES,
    Config,
    ConfigError,
    Registries,
    _plain,
    config_to_dict,
)
from gradflow.config.shipped import resolve_config
from gradflow.config.validate import _resolve


def load_config(
    path: str | os.PathLike, overrides: Sequence[str] = (), quick: bool = False, *, registries: Registries
) -> Config:
    """Read, override and validate the YAML config at ``path`` against ``registries``.

    ``path`` may also name a shipped config (``"compare_cells"``; see ``shipped_configs``).

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
    source = os.fspath(resolve_config(source))  # a path, or a shipped config's name
    data = _read_yaml(source)
    sets = [_parse_set(text) for text in ([overrides] if isinstance(overrides, str) else overrides)]
    base = _resolve(data, sets, source, source)
    quick_sets = [(f"{source}: quick[{key!r}]", key, _plain(value)) for key, value in base.quick.items()]
    quick_cfg = _resolve(data, quick_sets + sets, source, f"{source} (with its quick overrides)")
    return quick_cfg if quick else base


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
