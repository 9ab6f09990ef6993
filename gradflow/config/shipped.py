"""The configs gradflow ships: ``configs/`` in the repository, ``gradflow/configs/`` in a wheel.

A config is named by its path or, for a shipped one, by its name (``compare_cells``, also
``compare_cells.yaml``): ``resolve_config`` turns either into the file to read.
"""

from __future__ import annotations

import os
from pathlib import Path

from gradflow.config.schema import ConfigError

_PACKAGE = Path(__file__).resolve().parents[1]


def shipped_dir() -> Path:
    """The folder of the shipped configs: inside the installed package, else the source checkout's."""
    inside = _PACKAGE / "configs"  # a wheel (pyproject maps configs/ to gradflow.configs)
    if inside.is_dir():
        return inside
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"  # an editable install or the checkout itself
    raise ConfigError(f"{inside}: the shipped configs are missing (a broken install? reinstall gradflow)")


def shipped_configs() -> dict[str, Path]:
    """``{name: path}`` of every shipped config, sorted by name."""
    return {path.stem: path for path in sorted(shipped_dir().glob("*.yaml"))}


def resolve_config(source: str | os.PathLike) -> Path:
    """The file ``source`` names: an existing path, or a path in a folder other than ``configs/``,
    as it is; else the shipped config of that name.

    Raises a one-line ``ConfigError`` naming the shipped configs when it is neither.
    """
    path = Path(source)
    if path.exists() or path.parent not in (Path("."), Path("configs")):
        return path  # a path elsewhere: reading it says what is wrong with it
    # a bare name, or the checkout-relative spelling ``configs/NAME.yaml``
    found = shipped_configs().get(path.name.removesuffix(".yaml").removesuffix(".yml"))
    if found is not None:
        return found
    names = ", ".join(shipped_configs())
    raise ConfigError(f"{source}: no such file, and not a shipped config (shipped: {names})")
