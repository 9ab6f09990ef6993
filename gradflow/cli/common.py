"""What every verb shares: the one-line user error, ``--set KEY=VALUE`` parsing."""

from __future__ import annotations

import yaml


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _parse_sets(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set hidden_size=64")
        try:
            options[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            raise CliError(f"--set {pair!r}: cannot read value {value!r}") from None
    return options
