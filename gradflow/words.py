"""Words from numbers: every sentence that states a measured direction or size is made here.

A leaf (pure Python, imports nothing from gradflow): the CLI's tables, the
notebook, and the ``# measured`` header lines of ``configs/*.yaml`` (written by
``tools/config_headers.py`` and checked by ``tests/test_config_headers.py``)
all word a rate with `describe_rate` and a run directory's ``summary.json``
with `measured_sentence`, so no shipped text can say "vanishes" for a
gradient that grows.

Example::

    describe_rate(-0.4652)                      # 'vanishes, halves every 1.49 steps'
    describe_rate(0.0328)                       # 'grows, doubles every 21.1 steps'
    describe_rate(float("nan"))                 # 'no fit'
"""

from __future__ import annotations

import math
import re
import textwrap

DIRECTIONS = ("vanishes", "grows", "flat", "no fit")  # the words describe_rate can start with
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
TOOL = "tools/config_headers.py"
PROSE_KEYS = ("command", "runtime", "figure")
MEASURED = re.compile(r"measured \((full|--quick)\b[^)]*\)")


def _number(value: float) -> str:
    return f"{value:.3g}"


def describe_rate(rate, half_life=None, unit: str = "step") -> str:
    """One phrase for a fitted rate ``ln ||dL/dh|| per step`` (or per layer, ``unit="layer"``).

    ``rate < 0``: ``"vanishes, halves every 1.49 steps"``; ``rate > 0``:
    ``"grows, doubles every 21.2 steps"``; exactly 0: ``"flat"``; NaN, inf or
    ``None`` (no fit): ``"no fit"``. ``half_life`` defaults to ``ln 2 / |rate|``;
    a non-finite one gives the direction alone (never a half-life for growth).
    """
    if rate is None or not math.isfinite(float(rate)):
        return "no fit"
    rate = float(rate)
    if rate == 0.0:
        return "flat"
    life = math.log(2.0) / abs(rate) if half_life is None else float(half_life)
    word, every = ("vanishes", "halves") if rate < 0 else ("grows", "doubles")
    if not math.isfinite(life):
        return word
    text = _number(life)
    return f"{word}, {every} every {text} {unit}{'' if text == '1' else 's'}"


def _point_text(point: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def setting_label(run: dict) -> str:
    """A run's setting as ``summary.json`` names it: label plus sweep point (``"LSTM (forget_bias=1.0)"``)."""
    point = _point_text(run["point"])
    return f"{run['label']} ({point})" if point else run["label"]


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return math.nan if n == 0 else (values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2]))


def _fit_rate(run: dict) -> float:
    value = run["fit"].get("total", {}).get("rate")
    return math.nan if value is None else float(value)


def _measure_items(summary: dict) -> list[str]:
    runs = summary["runs"]
    points = [list(r["point"]) for r in runs]
    keys = points[0] if points else []
    grid_2d = len(keys) == 2 and all(len({str(r["point"][k]) for r in runs}) > 1 for k in keys)
    if grid_2d:
        return _grid_items(runs, keys)
    unit = {setting_label(r): "layer" if r.get("axis") == "depth" else "step" for r in runs}
    return [
        f"{s['label']} {describe_rate(s['median_rate'], s['median_half_life'], unit.get(s['label'], 'step'))}"
        for s in summary["settings"]
    ]


def _grid_items(runs: list[dict], keys: list[str]) -> list[str]:
    """A 2-D sweep: per cell and value of the second key, where the median rate vanishes or grows."""
    kx, ky = keys
    items = []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        for y in dict.fromkeys(r["point"][ky] for r in mine):
            row = [r for r in mine if r["point"][ky] == y]
            xs = list(dict.fromkeys(r["point"][kx] for r in row))
            words = [
                describe_rate(_median([_fit_rate(r) for r in row if r["point"][kx] == x])).split(",")[0]
                for x in xs
            ]
            spans, start, name = [], 0, kx.split(".")[-1]
            for i in range(1, len(xs) + 1):
                if i == len(xs) or words[i] != words[start]:
                    lo, hi = xs[start], xs[i - 1]
                    at = f"{lo}" if lo == hi else f"{lo}-{hi}"
                    spans.append(f"{words[start]} at {name} {at}")
                    start = i
            items.append(f"{label} at {ky.split('.')[-1]}={y}: {', '.join(spans)}")
    return items


def _train_items(summary: dict) -> list[str]:
    items = []
    for s in summary["settings"]:
        n = len(s["seeds"])
        if s["solved"]:
            text = f"solved {s['solved']}/{n} (median step {s['median_solved_step']:.0f})"
        else:
            text = f"not solved (0/{n})"
        if s["diverged"]:
            text += f", diverged {s['diverged']}/{n}"
        if s["median_final_ratio"] is not None:
            text += f", final loss {_number(s['median_final_ratio'])} x baseline"
        items.append(f"{s['label']}: {text}")
    return items


def measured_sentence(summary: dict) -> str:
    """What a run measured, one ``"; "``-separated item per setting, from its ``summary.json`` dict.

    Measurement runs: ``"tanh RNN vanishes, halves every 1.49 steps; ..."`` (median over seeds;
    a 2-D sweep grid gives, per value of its second key, the spans of the first key where the
    gradient vanishes or grows: ``"plain at bias_scale=0.0: vanishes at weight_scale 0.5-1.0, grows
    at weight_scale 1.25-3.0"``). Training runs: ``"LSTM (steps=50): solved 3/3 (median step
    300), final loss 0.047 x baseline"`` or ``"tanh RNN (steps=50): not solved (0/3), final loss
    1.02 x baseline"``.
    """
    items = _train_items(summary) if summary.get("kind") == "train" else _measure_items(summary)
    return "; ".join(items)


def _seeds(summary: dict) -> str:
    counts = {
        len(s["seeds"]) if isinstance(s["seeds"], list) else int(s["seeds"]) for s in summary["settings"]
    }
    if len(counts) != 1:
        return "seeds"
    n = counts.pop()
    return f"{n} seed{'' if n == 1 else 's'}"


def measured_head(size: str, summary: dict) -> str:
    """``"measured (full, median over 3 seeds; generated by tools/config_headers.py)"``."""
    seeds = _seeds(summary)
    how = "median over " + seeds if summary.get("kind") != "train" else seeds
    return f"measured ({size}, {how}; generated by {TOOL})"


def header_lines(full: dict, quick: dict, width: int = 100) -> list[str]:
    """The ``# measured (...)`` comment lines of a config from its full and ``--quick`` summaries.

    Each is ``measured_head`` + ``": "`` + ``measured_sentence``, wrapped to ``width`` with
    ``#   `` continuation lines (`read_header` joins them back with single spaces).
    """
    lines = []
    for size, summary in (("full", full), ("--quick", quick)):
        text = f"{measured_head(size, summary)}: {measured_sentence(summary)}"
        wrapped = textwrap.wrap(text, width - 2, subsequent_indent="  ", break_on_hyphens=False)
        lines += ["# " + wrapped[0]] + ["# " + w for w in wrapped[1:]]
    return lines


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """The leading comment lines of a config as ``[(key, lines)]``: a block starts at a prose key
    (``# figure: ...``) or at ``# measured (...``; continuation lines follow it (key ``""``: none)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        head = body.partition(":")[0]
        if body.startswith("measured ("):
            blocks.append(("measured", [line]))
        elif head in PROSE_KEYS and ":" in body:
            blocks.append((head, [line]))
        elif blocks:
            blocks[-1][1].append(line)
        else:
            blocks.append(("", [line]))
    return blocks


def read_header(text: str) -> dict:
    """A config's leading comment block: ``{"command", "runtime", "figure", "full", "--quick"}``.

    Prose keys hold their text (continuation lines joined by one space);
    ``"full"`` and ``"--quick"`` hold the sentence of the ``# measured (...)`` lines.
    """
    info = {}
    for key, lines in _blocks(text):
        joined = " ".join(line[1:].strip() for line in lines)
        if key in PROSE_KEYS:
            info[key] = joined.partition(":")[2].strip()
        elif key == "measured":
            found = MEASURED.match(joined)
            if found and joined[found.end() :].startswith(":"):
                info[found.group(1)] = joined[found.end() + 1 :].strip()
    return info


def write_header(text: str, lines: list[str]) -> str:
    """``text`` (a config) with its ``# measured`` lines replaced by ``lines`` (after the prose)."""
    blocks = _blocks(text)
    head = "".join("".join(block) for key, block in blocks if key != "measured")
    rest = text[sum(len(line) for _, block in blocks for line in block) :]
    return head + "".join(line + "\n" for line in lines) + rest


def compare(expected: str, found: str, rtol: float, loss_factor: float | None = None) -> list[str]:
    """Differences between two measured sentences: words must be equal, numbers within ``rtol``.

    ``loss_factor``: a final-loss ratio (a number followed by ``" x baseline"``) may instead differ by
    up to this factor either way (short float32 training runs end at CPU-dependent losses).
    Returns one-line problems, ``[]`` when they agree. Items are the ``"; "``-separated settings.
    """
    want, got = expected.split("; "), found.split("; ")
    if len(want) != len(got):
        return [f"{len(got)} settings stated, {len(want)} measured: {expected!r}"]
    problems = []
    for a, b in zip(want, got, strict=True):
        words_a, words_b = NUMBER.sub("#", a), NUMBER.sub("#", b)
        if words_a != words_b:
            problems.append(f"stated {b!r}, measured {a!r}")
            continue
        for m, y in zip(NUMBER.finditer(a), NUMBER.findall(b), strict=True):
            x = m.group()
            if loss_factor is not None and a[m.end() :].startswith(" x baseline") and float(x) * float(y) > 0:
                ok = abs(math.log(float(y) / float(x))) <= math.log(loss_factor) + 1e-12
                tol = f"factor {loss_factor:g}"
            else:
                ok = math.isclose(float(x), float(y), rel_tol=rtol, abs_tol=1e-12)
                tol = f"rtol {rtol}"
            if not ok:
                problems.append(f"stated {b!r}, measured {a!r} ({y} vs {x}, {tol})")
                break
    return problems
