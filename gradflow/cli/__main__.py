"""``python -m gradflow.cli``: the ``gradflow`` command."""

from gradflow.cli import entry

entry()
