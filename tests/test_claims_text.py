"""The words of the claims report come from numbers: criterion texts are rendered from the thresholds
the verdict used, report tables keep their columns when a cell holds ``|``, and the README's claims
table is the rendering of a stored full run whose verdicts recompute from its numbers."""

import json
import pathlib
import re

import pytest

from gradflow import claims, markdown

ROOT = pathlib.Path(__file__).resolve().parents[1]
FULL = ROOT / "experiments" / "claims_full.json"


def split_row(row: str) -> list[str]:
    """A markdown table row's cells, split on unescaped pipes, ``\\|`` read back as ``|``."""
    assert row.startswith("| ") and row.endswith(" |"), row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row[1:-1])]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The rows (header and separator included) of the markdown table that starts at ``header``."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(split_row(line))
    return rows


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.id)
def test_criterion_template_uses_exactly_the_experiments_thresholds(claim):
    module = claims.load_experiment(claim.experiment)
    assert claim.placeholders() == set(module.CRITERIA), claim.id
    text = claim.render(module.CRITERIA)
    assert "{" not in text and "}" not in text
    with pytest.raises(KeyError):  # a text cannot quote a threshold the verdict did not get
        claim.render({})


def test_rendered_criteria_quote_the_thresholds():
    """Spot checks against numbers written out by hand (the experiments' CRITERIA dicts)."""
    c2 = claims.get("C2").render({"product_rtol": 1e-8, "bound_slack": 1e-9})
    assert "<= 1e-08 (float64)" in c2 and "<= 1e-09" in c2
    c4 = claims.get("C4").render({"clipped_solved_fraction": 2 / 3, "unclipped_failed_fraction": 1.0})
    assert ">= 67% of seeds" in c4 and ">= 100% of seeds" in c4
    c14 = claims.get("C14").render(claims.load_experiment("c14_architectures").CRITERIA)
    assert "10^-30" in c14 and "within 10%" in c14 and ">= 0.3 decades" in c14


@pytest.fixture(scope="module")
def c2_report(tmp_path_factory):
    """C2 at quick size with one threshold overridden, written as a report."""
    out = tmp_path_factory.mktemp("c2")
    result = claims.run_claim(claims.get("C2"), out, quick=True, criteria={"product_rtol": 3.5e-7})
    claims.write_report([result], out)
    return out, result


def test_report_tables_keep_their_columns_with_pipes_in_cells(c2_report):
    out, result = c2_report
    assert "||J_t||" in result.measured and "||J_t||" in result.criterion  # cells that hold pipes
    header = "| claim | slide | measured | criterion | verdict | figure |"
    rows = table_rows((out / "report.md").read_text(), header)
    assert len(rows) == 3 and all(len(r) == 6 for r in rows), rows
    assert rows[2][:5] == [
        "C2 the BPTT gradient is a product of Jacobians with tanh' in (0, 1]",
        "B10",
        result.measured,
        result.criterion,
        f"**{result.verdict}**",
    ]


def test_an_overridden_threshold_changes_the_rendered_criterion(c2_report):
    out, _ = c2_report
    (entry,) = json.loads((out / "claims.json").read_text())
    assert entry["criteria"] == {"product_rtol": 3.5e-7, "bound_slack": 1e-9}
    assert "<= 3.5e-07 (float64)" in entry["criterion"] and "1e-08" not in entry["criterion"]
    md = (out / "report.md").read_text()
    assert "<= 3.5e-07 (float64)" in md and "1e-08" not in md
    assert "&lt;= 3.5e-07 (float64)" in (out / "report.html").read_text()


def test_markdown_cells_escape_pipes_and_newlines():
    assert markdown.markdown_row(["a|b", "c\nd", 1.5]) == "| a\\|b | c d | 1.5 |"
    assert split_row(markdown.markdown_row(["max |x - y|", "z"])) == ["max |x - y|", "z"]


# ------------------------------------------------------------------ the README table from a full run
@pytest.fixture(scope="module")
def full():
    return json.loads(FULL.read_text())


def test_readme_claims_table_is_the_rendering_of_the_stored_full_run(full):
    """Rewrite it with ``python tools/readme_claims.py [DIR/claims.json]``."""
    readme = (ROOT / "README.md").read_text()
    assert markdown.with_readme_table(readme, full) == readme
    rows = table_rows(readme, "| claim | slides | verdict (full run) |")
    assert [r[0].split()[0] for r in rows[2:]] == [c.id for c in claims.CLAIMS]
    assert all(len(r) == 3 for r in rows)


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.id)
def test_stored_full_run_recomputes_with_the_current_criteria(full, claim):
    """Verdict, measured text and criterion text of the stored run follow from its numbers and the
    experiments' current thresholds (C9's timing is stored, so it recomputes too)."""
    (entry,) = [e for e in full if e["id"] == claim.id]
    module = claims.load_experiment(claim.experiment)
    assert entry["criteria"] == module.CRITERIA
    assert module.verdict(entry["numbers"], module.CRITERIA) == (entry["verdict"], entry["measured"])
    assert entry["criterion"] == claim.render(module.CRITERIA)
    assert entry["title"] == claim.title
