"""Shared timing helper of the benchmark scripts (run as `python benchmarks/bench_*.py`)."""

import json
import subprocess
import sys
import time

import jax
import numpy as np


def interleaved_medians(fns: dict, reps: int) -> dict:
    """Median wall time of each jitted fn, calls interleaved so drift hits all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def fresh_process(script: str, payload) -> dict:
    """``python script --child JSON(payload)`` in a fresh interpreter (its own peak memory and
    compile state); the last line it prints, read as JSON."""
    cmd = [sys.executable, script, "--child", json.dumps(payload)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])
