"""C7: the LSTM cell state carries the gradient: c-path vs h-path decay rates, as a function of the
forget-gate bias at initialization (configs/lstm_forget_bias.yaml) and before/after training on the
adding problem (configs/adding.yaml, the LSTM's per-part norms at the first and last record)."""

import shutil
from pathlib import Path

import numpy as np
from gradflow.experiments.shared import config_run, median

from gradflow import decay_fit

CRITERIA = {"keep_rate": -0.05}  # ln/step: "keeps the gradient" = half-life > ln 2 / 0.05 = 14 steps


def _part_rates(log10, window):
    return float(decay_fit(log10[:-1], window).rate)  # the last entry: the final carry, unread by the loss


def run(out: Path, quick: bool) -> dict:
    init_dir, init = config_run("lstm_forget_bias", out, quick)
    shutil.copy(init_dir / "paths.png", out / "c07.png")
    by_bias: dict = {}
    for r in init["runs"]:
        bias = r["point"]["cells.0.options.forget_bias"]
        by_bias.setdefault(bias, []).append((r["fit"]["c"]["rate"], r["fit"]["h"]["rate"]))
    at_init = {
        str(b): {"c_rate": median(c for c, _ in v), "h_rate": median(h for _, h in v)}
        for b, v in by_bias.items()
    }
    train_dir, trained = config_run("adding", out, quick)
    with np.load(train_dir / "results.npz") as data:
        c, h, steps = data["flow_log10_c"], data["flow_log10_h"], data["eval_step"]
    rows = []
    for i, r in enumerate(trained["runs"]):
        if r["cell"] != "lstm":
            continue
        recorded = np.flatnonzero(np.isfinite(c[i]).any(axis=1))
        first, last = recorded[0], recorded[-1]
        T = c.shape[-1] - 2
        window = (1, T)
        rows.append(
            {
                "seed": r["seed"],
                "point": r["point"],
                "c_rate_before": _part_rates(c[i, first], window),
                "h_rate_before": _part_rates(h[i, first], window),
                "c_rate_after": _part_rates(c[i, last], window),
                "h_rate_after": _part_rates(h[i, last], window),
                "after_step": int(steps[i, last]),
            }
        )
    return {
        "at_init": at_init,
        "trained": rows,
        "figure": str(out / "c07.png"),
        "runs": [str(init_dir), str(train_dir)],
    }


def verdict(numbers: dict, criteria: dict):
    """Reproduced if the c-path keeps the gradient at every forget bias and after training; under
    conditions if only at some biases or only after training. (c and h share the asymptotic rate, the
    top Lyapunov exponent, so c-minus-h differences are reported, not judged.)"""
    init = numbers["at_init"]
    keeps = {b: v["c_rate"] >= criteria["keep_rate"] for b, v in init.items()}
    after = numbers["trained"]
    c_after = median(r["c_rate_after"] for r in after)
    c_before = median(r["c_rate_before"] for r in after)
    trained_keeps = c_after >= criteria["keep_rate"]
    measured = (
        "c-path (h-path) rate at init by forget bias: "
        + ", ".join(f"b={b}: {v['c_rate']:+.3f} ({v['h_rate']:+.3f})" for b, v in init.items())
        + f"; trained LSTM (adding) c-path rate {c_before:+.3f} -> {c_after:+.3f} ln/step"
    )
    if all(keeps.values()) and trained_keeps:
        return "reproduced", measured
    if any(keeps.values()) or trained_keeps:
        good = [b for b, ok in keeps.items() if ok]
        return (
            "reproduced under conditions",
            measured
            + f" (the cell state keeps the gradient at forget bias {', '.join(good) or 'none'}"
            + (" and after training" if trained_keeps else "")
            + ")",
        )
    return "not reproduced", measured
