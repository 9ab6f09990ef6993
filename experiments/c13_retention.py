"""C13: trained LSTMs/GRUs retain state longer, on the adding problem (configs/adding.yaml).

Per cell and seed, before and after training: the decay rate of ``||dL/dh_t||`` of the training loss
(its half-life ln 2 / -rate) recorded by the run, and the top Lyapunov exponent of the carry
dynamics driven by held-out adding inputs (``gradflow.measure.lyapunov_spectrum``; the init params are
rebuilt from the run's seed, the trained ones restored from the run directory).
"""

import math
import shutil
from pathlib import Path

import jax
from gradflow.experiments.shared import by_label, config_run, initial_params, median

from gradflow import load_trained, lyapunov_spectrum
from gradflow.engine.training import EVAL_KEY

CRITERIA = {"min_rate_gain": 0.02}  # ln/step: the rate must rise by at least this much


def _num(x) -> str:
    """``x`` as ``+0.123``; None (a non-finite value, as claims.json stores it: -inf when the carry
    dynamics collapse, e.g. every ReLU unit dead) as ``not finite``."""
    return "not finite" if x is None else f"{x:+.3f}"


def _steps(half_life) -> str:
    """A half-life; None (inf read back from claims.json: no decay) as ``inf``."""
    return "inf" if half_life is None else f"{half_life:.3g}"


def _half_life(rate):
    return math.inf if rate is None or rate >= 0 else math.log(2) / -rate


def _top_exponents(run_dir) -> dict:
    """``{run_id: (top exponent at init, after training)}`` on 64 held-out adding sequences."""
    out = {}
    for t in load_trained(run_dir):
        batch = t.task.sample(jax.random.key(EVAL_KEY), 64)
        cell = t.model.cell
        carry0 = cell.initial_carry(64)
        top = []
        for params in (initial_params(t), t.params):
            spec = lyapunov_spectrum(cell, params["cell"], carry0, batch.xs, k=1, transient=10)
            top.append(float(spec.exponents[0]))
        out[t.run["run_id"]] = tuple(top)
    return out


def run(out: Path, quick: bool) -> dict:
    run_dir, summary = config_run("adding", out, quick)
    shutil.copy(run_dir / "flow_rate.png", out / "c13.png")
    top = _top_exponents(run_dir)
    rows = {}
    for label, runs in by_label(summary).items():
        first = median(r["flow_rate_first"] for r in runs)
        last = median(r["flow_rate_last"] for r in runs)
        rows[label] = {
            "cell": runs[0]["cell"],
            "rate_before": first,
            "rate_after": last,
            "half_life_before": _half_life(first),
            "half_life_after": _half_life(last),
            "lyapunov_before": median(top[r["run_id"]][0] for r in runs),
            "lyapunov_after": median(top[r["run_id"]][1] for r in runs),
            "solved": sum(r["solved"] for r in runs),
            "seeds": len(runs),
        }
    return {"settings": rows, "figure": str(out / "c13.png"), "runs": [str(run_dir)]}


def verdict(numbers: dict, criteria: dict):
    rows = numbers["settings"]
    gated = {k: v for k, v in rows.items() if v["cell"] in ("lstm", "gru")}
    longer = {
        k: v["rate_after"] - v["rate_before"] >= criteria["min_rate_gain"]
        and None not in (v["lyapunov_after"], v["lyapunov_before"])
        and v["lyapunov_after"] - v["lyapunov_before"] >= criteria["min_rate_gain"]
        for k, v in gated.items()
    }
    measured = "; ".join(
        f"{k}: rate {v['rate_before']:+.3f} -> {v['rate_after']:+.3f} ln/step "
        f"(half-life {_steps(v['half_life_before'])} -> {_steps(v['half_life_after'])} steps), "
        f"top Lyapunov exponent {_num(v['lyapunov_before'])} -> {_num(v['lyapunov_after'])}"
        for k, v in rows.items()
    )
    if longer and all(longer.values()):
        return "reproduced", measured
    if any(longer.values()):
        return "reproduced under conditions", measured
    return "not reproduced", measured
