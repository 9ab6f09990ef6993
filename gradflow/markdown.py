"""Markdown tables gradflow writes (report.md, the README's claims table): one escaping rule.

A cell's ``|`` would split its row into extra columns and a newline would end the row, so every
cell goes through ``markdown_cell``.
"""

from __future__ import annotations


def markdown_cell(value) -> str:
    """``value`` as one markdown table cell: ``|`` escaped, newlines folded to spaces."""
    return " ".join(str(value).replace("|", "\\|").split())


def markdown_row(cells) -> str:
    """One markdown table row (every markdown table gradflow writes goes through here)."""
    return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"


README_START = "<!-- claims-table:start (generated from experiments/claims_full.json) -->"
README_END = "<!-- claims-table:end -->"


def readme_table(payload: list) -> str:
    """The README's claims table (claim, slides, verdict: measured) from a full run's claims.json."""
    lines = [markdown_row(["claim", "slides", "verdict (full run)"]), markdown_row(["---"] * 3)]
    for entry in payload:
        slides = ", ".join(dict.fromkeys(f"{q['deck']}{q['slide']}" for q in entry["slides"]))
        verdict = f"{entry['verdict']}: {entry['measured']}"
        lines.append(markdown_row([f"{entry['id']} {entry['title']}", slides, verdict]))
    seconds = sum(e["seconds"] for e in payload)
    lines += [
        "",
        f"Each claim's experiment time is its `seconds` in the stored json ({seconds:.0f} s summed; a "
        "claim rerun with `--only` also counts the shipped runs it shares with others).",
    ]
    return "\n".join(lines)


def with_readme_table(readme: str, payload: list) -> str:
    """``readme`` with the text between the claims-table markers replaced by ``readme_table``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README: the markers {README_START!r} ... {README_END!r} are missing")
    return readme[: start + len(README_START)] + "\n" + readme_table(payload) + "\n" + readme[end:]
