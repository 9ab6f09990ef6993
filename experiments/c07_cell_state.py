"""C7: the LSTM cell state carries the gradient: c-path vs h-path decay rates, as a function of the
forget-gate bias at initialization (configs/lstm_forget_bias.yaml) and before/after training on the
adding problem (configs/adding.yaml, the LSTM's per-part norms at the first and last record)."""

import shutil
from pathlib import Path

import numpy as np
from _runs import config_run, median

from gradflow import decay_fit

CRITERIA = {"min_c_minus_h": 0.0}


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
    init = numbers["at_init"]
    c_wins_init = {b: v["c_rate"] - v["h_rate"] > criteria["min_c_minus_h"] for b, v in init.items()}
    after = numbers["trained"]
    c_after = median(r["c_rate_after"] for r in after)
    c_before = median(r["c_rate_before"] for r in after)
    measured = (
        "at init, c-path vs h-path rate by forget bias: "
        + ", ".join(f"b={b}: {v['c_rate']:+.3f} vs {v['h_rate']:+.3f}" for b, v in init.items())
        + f"; trained LSTM (adding) c-path rate {c_before:+.3f} -> {c_after:+.3f} ln/step"
    )
    if all(c_wins_init.values()) and c_after > c_before:
        return "reproduced", measured
    if any(c_wins_init.values()) or c_after > c_before:
        good = [b for b, ok in c_wins_init.items() if ok]
        return (
            "reproduced under conditions",
            measured + f" (c-path ahead at forget bias {', '.join(good) or 'none'})",
        )
    return "not reproduced", measured
