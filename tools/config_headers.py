"""Regenerate the ``# measured (...)`` header lines of shipped configs from fresh runs.

A maintainer tool, not part of the package: it runs each config (full size and
``--quick``) with ``gradflow run`` in a fresh process, as a user does, into a
temporary directory, words the two ``summary.json`` files with
``gradflow.words.header_lines`` and, with ``--write``, puts the lines into the
config's comment header (after the ``command/runtime/figure`` prose). Without
``--write`` it prints what it would write and exits 1 when the config says
something else (``tests/test_config_headers.py`` does the same check in CI
for the cheap runs).

    python tools/config_headers.py --write configs/compare_cells.yaml
    python tools/config_headers.py --write configs/*.yaml
    python tools/config_headers.py --full runs/adding --quick runs/adding_quick configs/adding.yaml

``--full DIR`` / ``--quick DIR`` reuse finished run directories instead of running
(only with one config).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradflow import words

RTOL = 0.02  # see tests/test_config_headers.py for why


def run(config: Path, out: Path, quick: bool) -> dict:
    """``gradflow run CONFIG [--quick] -o OUT`` in a fresh process; its ``summary.json``."""
    argv = [sys.executable, "-m", "gradflow.cli", "run", str(config), "-o", str(out), "--force"]
    proc = subprocess.run(argv + (["--quick"] if quick else []), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SystemExit(f"config_headers: {config}{' --quick' if quick else ''} failed: {tail}")
    return json.loads((out / "summary.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--write", action="store_true", help="rewrite the configs' measured lines")
    parser.add_argument("--full", type=Path, help="a finished full-size run directory to reuse")
    parser.add_argument("--quick", type=Path, help="a finished --quick run directory to reuse")
    args = parser.parse_args(argv)
    if (args.full or args.quick) and len(args.configs) > 1:
        parser.error("--full/--quick reuse run directories of one config")
    status = 0
    for config in args.configs:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            full = (
                json.loads((args.full / "summary.json").read_text())
                if args.full
                else run(config, Path(tmp) / "full", quick=False)
            )
            quick = (
                json.loads((args.quick / "summary.json").read_text())
                if args.quick
                else run(config, Path(tmp) / "quick", quick=True)
            )
        lines = words.header_lines(full, quick)
        text = config.read_text()
        new = words.write_header(text, lines)
        stated = words.read_header(text)
        fresh = words.read_header(new)
        problems = [
            f"{size}: {p}"
            for size in ("full", "--quick")
            for p in (
                words.compare(fresh[size], stated[size], RTOL) if size in stated else ["no measured line"]
            )
        ]
        took = f"{time.perf_counter() - t0:.0f} s"
        if args.write:
            config.write_text(new)
            print(f"{config}: wrote {len(lines)} measured lines ({took})")
        elif problems:
            status = 1
            print(f"{config}: the header disagrees with the runs ({took}):")
            print("\n".join(f"  {p}" for p in problems))
            print("\n".join(lines))
        else:
            print(f"{config}: header agrees with the runs ({took})")
    return status


if __name__ == "__main__":
    sys.exit(main())
