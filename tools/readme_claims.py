"""Rewrite the README's claims table from a full ``gradflow claims`` run.

    gradflow claims -o /tmp/claims_full                   # all 14 at full size (10-20 min)
    python tools/readme_claims.py /tmp/claims_full/claims.json

copies that ``claims.json`` to ``experiments/claims_full.json`` (the stored full run) and replaces
the README block between the claims-table markers with ``gradflow.markdown.readme_table`` of it.
Without an argument it re-renders the block (and each stored criterion text, from the stored
thresholds) from the stored file; thresholds that changed need a rerun of their claims.
``tests/test_claims_text.py`` fails when the block and the stored run disagree, or when the
stored verdicts do not follow from its numbers with the current criteria.

A partial run (``--only C3``) replaces just those claims in the stored file.
"""

import json
import sys
from pathlib import Path

from gradflow import claims, markdown

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "experiments" / "claims_full.json"
README = ROOT / "README.md"
ERR = sys.stderr


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python tools/readme_claims.py [DIR/claims.json]", file=sys.stderr)
        return 2
    payload = json.loads(STORED.read_text()) if STORED.exists() else []
    if argv:
        try:
            new = json.loads(Path(argv[0]).read_text())
        except (OSError, ValueError) as err:
            print(f"{argv[0]}: cannot read it ({type(err).__name__}); expected DIR/claims.json", file=ERR)
            return 2
        if not isinstance(new, list) or not all(isinstance(e, dict) and e.get("numbers") for e in new):
            print(f"{argv[0]}: expected a gradflow claims report (a list of claims with numbers)", file=ERR)
            return 2
        by_id = {e["id"]: e for e in payload} | {e["id"]: e for e in new}
        payload = [by_id[c.id] for c in claims.CLAIMS if c.id in by_id]
    for e in payload:  # a reworded criterion needs no rerun: rendered again from the stored thresholds
        e["criterion"] = claims.get(e["id"]).render(e["criteria"])
    STORED.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    README.write_text(markdown.with_readme_table(README.read_text(), payload))
    print(f"{README}: claims table from {STORED.relative_to(ROOT)} ({len(payload)} claims)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
