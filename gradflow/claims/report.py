"""Running a claim's experiment, judging it, and the report (report.md, claims.json, report.html)."""

from __future__ import annotations

import html
import importlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradflow import rundir
from gradflow.claims.registry import CLAIMS, VERDICTS, Claim
from gradflow.markdown import markdown_row


@dataclass
class Result:
    """A claim's outcome: verdict, one-line measured text, the numbers, the criteria used, the figure."""

    id: str
    verdict: str
    measured: str
    numbers: dict
    criteria: dict
    figure: str | None
    seconds: float
    runs: list
    criterion: str = ""  # the claim's criterion rendered with ``criteria``


def load_experiment(name: str):
    """The claim's experiment module, ``gradflow.experiments.<name>`` (``experiments/`` in the
    repository, shipped inside the package)."""

    return importlib.import_module(f"gradflow.experiments.{name}")


def run_claim(
    claim: Claim, out, *, quick: bool = False, criteria: dict | None = None, manifest=None
) -> Result:
    """Run ``claim``'s experiment into ``out/<id>/`` and judge it (``criteria`` override its defaults).

    ``manifest`` (``open_report``'s) lists what the experiment wrote: its folder and the run
    directories under ``out/runs`` are gradflow's scratch while it runs, then listed file by file.
    """

    module = load_experiment(claim.experiment)
    folder = Path(out) / claim.id
    if manifest is not None:
        manifest.record(claim.id, "runs", kind="scratch")
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        numbers = module.run(folder, quick)
    finally:
        if manifest is not None:
            _record_outputs(manifest, folder)
    figure, runs = numbers.pop("figure", None), numbers.pop("runs", [])
    numbers = json_ready(numbers)  # judged as claims.json stores them, so its text recomputes from it
    used = {**module.CRITERIA, **(criteria or {})}
    verdict, measured = module.verdict(numbers, used)
    if verdict not in VERDICTS:
        raise ValueError(f"{claim.experiment}.verdict returned {verdict!r}; expected one of {VERDICTS}")
    seconds = time.perf_counter() - t0
    return Result(claim.id, verdict, measured, numbers, used, figure, seconds, runs, claim.render(used))


def _record_outputs(manifest, folder) -> None:
    """List the files a claim wrote in ``folder`` and the run directories in ``runs/``."""

    root = manifest.root
    files = [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    manifest.record(*files)
    runs = root / "runs"
    done = [p for p in runs.iterdir() if rundir.Manifest.read(p) is not None] if runs.is_dir() else []
    manifest.record(*done, kind="rundir")
    manifest.entries.pop(folder.relative_to(root).as_posix(), None)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # an experiment that wrote nothing leaves no unlisted folder behind
    manifest.save()


def open_report(out, force: bool):
    """Open the report directory ``out`` (``gradflow.rundir`` rules); ``force`` first removes the
    report gradflow wrote there before. Returns its ``rundir.Manifest``."""

    manifest, existed = rundir.open_dir(Path(out), "claims")
    if existed and manifest.entries:
        if not force:
            raise rundir.RunDirError(
                f"{out}: holds a claims report; pass --force to replace it (only files gradflow wrote "
                "are removed) or choose another -o"
            )
        manifest.remove()
    return manifest


def finish_report(results: list[Result], manifest) -> list:
    """``write_report`` into the manifest's directory, listing its files; the report is complete."""
    manifest.record("report.md", "claims.json", "report.html")
    written = write_report(results, manifest.root)
    manifest.entries.pop("runs", None)  # the run directories are listed one by one
    manifest.save()
    return written


def _rel_or_abs(path, out) -> str:
    """``path`` relative to the report directory when it lies inside it, else absolute."""
    path, out = Path(path).resolve(), Path(out).resolve()
    return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)


def json_ready(value):
    """JSON-ready copy: numpy scalars to Python, NaN/inf to None (claims.json stays valid JSON)."""

    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(results: list[Result], out) -> list:
    """``report.md`` (table, then a section per claim), ``claims.json`` and ``report.html`` in ``out``."""

    out = Path(out)
    by_id = {c.id: c for c in CLAIMS}
    rel = lambda p: None if p is None else Path(p).resolve().relative_to(out.resolve()).as_posix()  # noqa: E731
    lines = [
        "# Slide claims, measured",
        "",
        markdown_row(["claim", "slide", "measured", "criterion", "verdict", "figure"]),
        markdown_row(["---"] * 6),
    ]
    for r in results:
        c = by_id[r.id]
        slides = ", ".join(dict.fromkeys(f"{q.deck}{q.slide}" for q in c.quotes))  # A8, A8 -> A8
        fig = f"[{rel(r.figure)}]({rel(r.figure)})" if r.figure else "-"
        row = [f"{c.id} {c.title}", slides, r.measured, r.criterion, f"**{r.verdict}**", fig]
        lines.append(markdown_row(row))
    for r in results:
        c = by_id[r.id]
        lines += ["", f"## {c.id}: {c.title}", ""]
        lines += [f"> {q.text} (deck {q.deck}, slide {q.slide})" for q in c.quotes]
        lines += ["", f"- measured: {c.measured}", f"- criterion: {r.criterion} (thresholds: {r.criteria})"]
        lines += [f"- result: {r.measured}", f"- verdict: **{r.verdict}** ({r.seconds:.0f} s)"]
        if r.runs:
            lines.append("- numbers from: " + ", ".join(f"`{_rel_or_abs(p, out)}`" for p in r.runs))
        if r.figure:
            lines += ["", f"![{c.id}]({rel(r.figure)})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    payload = [
        {
            "id": r.id,
            "title": by_id[r.id].title,
            "slides": [{"deck": q.deck, "slide": q.slide, "text": q.text} for q in by_id[r.id].quotes],
            "verdict": r.verdict,
            "measured": r.measured,
            "criterion": r.criterion,
            "criteria": r.criteria,
            "numbers": r.numbers,
            "figure": rel(r.figure),
            "runs": [_rel_or_abs(p, out) for p in r.runs],
            "seconds": r.seconds,
        }
        for r in results
    ]
    (out / "claims.json").write_text(json.dumps(json_ready(payload), indent=2, allow_nan=False))
    body = ["<h1>Slide claims, measured</h1>"]
    for r in results:
        c = by_id[r.id]
        body.append(f"<h2>{html.escape(c.id)}: {html.escape(c.title)} &mdash; {html.escape(r.verdict)}</h2>")
        body += [
            f"<blockquote>{html.escape(q.text)} (deck {q.deck}, slide {q.slide})</blockquote>"
            for q in c.quotes
        ]
        body.append(f"<p>{html.escape(r.measured)}</p><p><i>criterion:</i> {html.escape(r.criterion)}</p>")
        if r.figure:
            body.append(f'<img src="{html.escape(rel(r.figure))}" style="max-width:100%">')
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>gradflow claims</title>\n" + "\n".join(body)
    )
    return [out / "report.md", out / "claims.json", out / "report.html"]
