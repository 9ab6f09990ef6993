"""``gradflow config NAME``: a shipped config's YAML, as a starting point for your own."""

from __future__ import annotations

import sys

from gradflow.cli.common import CliError


def _cmd_config(args) -> int:
    import os

    from gradflow import config as cfgmod

    shipped = cfgmod.shipped_configs()
    name = args.name.removesuffix(".yaml")
    if name not in shipped:
        raise CliError(f"{args.name}: not a shipped config (shipped: {', '.join(shipped)})")
    text = shipped[name].read_text(encoding="utf-8")
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:  # "x": never replaces a file that is there (yours or not)
        with open(args.output, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise CliError(f"{args.output}: already exists; choose another file (nothing was written)") from None
    except OSError as err:
        raise CliError(f"{args.output}: cannot write: {err.strerror or err}") from None
    print(f"wrote {args.output} (from {name}); run it with: gradflow run {os.fspath(args.output)}")
    return 0
