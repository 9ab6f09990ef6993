"""Throughput of the large phase diagram over devices and processes, against its cost model.

    python benchmarks/bench_scale.py            # full size: width 512, depth 100 (a sample of runs)
    python benchmarks/bench_scale.py --quick    # the config's --quick sizes (width 32, depth 10)

``configs/phase_diagram_large.yaml`` is 64 x 64 grid points x 3 seeds = 12,288 runs of a plain tanh
stack. Each setting below runs a sample of R of those runs (same shapes, spread over the grid) in
fresh processes: 1, 2 and 4 fake CPU devices (``JAX_NUM_CPU_DEVICES``) and 2 processes of 1 device
(``jax.distributed``, gloo). Steady state: the median of 3 calls after the compiling one.

Cost model (the README's "Scale out" section): one run of a width-N, depth-L stack at batch B costs
C = 6 L B N^2 FLOPs (forward 2 B N^2 per layer, backward 4 B N^2: the input and weight gradients) and
holds its weights (4 L N^2 bytes) plus two activations per layer (8 L B N bytes). A device that
sustains F FLOP/s runs R runs in R C / F seconds; D devices of their own in R C / (D F). Fake CPU
devices and local processes share this machine's cores, so here the prediction for every setting is
the one-device time: the sharded program must not be slower than that (no all-gather, no
duplicated work), and that is what the ratio measured/predicted checks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

FULL = {"width": 512, "depth": 100, "batch": 32, "runs": 8}
QUICK = {"width": 32, "depth": 10, "batch": 32, "runs": 256}
GRID_RUNS = 64 * 64 * 3


def worker(size: dict, coordinator: str | None, n_proc: int, pid: int) -> None:
    import jax

    if coordinator:
        from gradflow.engine import processes

        processes.start(processes.Distributed(coordinator, n_proc, pid, timeout_s=60))
    from gradflow.engine import sweep

    R = size["runs"]
    ws, bs = np.linspace(0.5, 3.0, R), np.linspace(0.0, 0.5, R)[::-1]
    opts = [
        {"width": size["width"], "depth": size["depth"], "activation": "tanh", "weight_scale": float(w),
         "bias_scale": float(b)}
        for w, b in zip(ws, bs, strict=True)
    ]  # fmt: skip
    inputs = sweep.Inputs(batch=size["batch"])
    t0 = time.perf_counter()
    sweep.measure_runs("plain", opts, list(range(R)), inputs)
    first = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        res, _ = sweep.measure_runs("plain", opts, list(range(R)), inputs)
        times.append(time.perf_counter() - t0)
    if jax.process_index() == 0:
        row = {"devices": jax.device_count(), "processes": jax.process_count(), "first_s": first}
        print(json.dumps(row | {"steady_s": float(np.median(times)), "rate0": float(res.total_rate[0])}))


def _run(size, devices, processes):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env |= {"JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu", "GRADFLOW_COMPILE_CACHE": "0"}
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, __file__, "--worker", json.dumps(size)]
    if processes > 1:
        argv += ["--coordinator", f"localhost:{port}", "--num-processes", str(processes)]
    procs = [
        subprocess.Popen([*argv, "--process-id", str(i)] if processes > 1 else argv, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(processes)
    ]  # fmt: skip
    outs = [p.communicate() for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise SystemExit(f"worker failed: {err.strip().splitlines()[-1]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker")
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker), args.coordinator, args.num_processes, args.process_id)
        return
    size = QUICK if args.quick else FULL
    L, N, B, R = size["depth"], size["width"], size["batch"], size["runs"]
    flops = 6 * L * B * N**2
    memory = 4 * L * N**2 + 8 * L * B * N
    print(
        f"phase_diagram_large{' --quick' if args.quick else ''}: width {N}, depth {L}, batch {B}; "
        f"cost model: {flops / 1e9:.3g} GFLOP and {memory / 2**20:.3g} MiB per run; sample of {R} runs"
    )
    results = []
    for devices, processes in ((1, 1), (2, 1), (4, 1), (1, 2)):
        r = _run(size, devices, processes)
        results.append(r)
        one = results[0]["steady_s"]
        print(
            f"  {r['devices']} device(s) in {r['processes']} process(es): {R / r['steady_s']:.3g} runs/s "
            f"({r['steady_s']:.2f} s steady, {r['first_s']:.2f} s with compiling); "
            f"measured/predicted {r['steady_s'] / one:.2f}; "
            f"rate of the first run {r['rate0']:+.4f} (same in every setting)"
        )
    F = R * flops / results[0]["steady_s"]
    print(
        f"sustained here: {F / 1e9:.3g} GFLOP/s; predicted full grid ({GRID_RUNS} runs): "
        f"{GRID_RUNS * flops / F:.3g} s on this machine, {GRID_RUNS * flops / (8 * F):.3g} s on 8 devices "
        "like it (plus compiling)"
    )


if __name__ == "__main__":
    main()
