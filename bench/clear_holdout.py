"""The books R1 always holds out: every scanned book of the development share and every CLEAR
passage it was made of (named in the share's truth file), one per line, for
``corpus shards build --hold-out @FILE``. Usage: clear_holdout.py TRUTH.json > holdout.txt

Holding the passages out with their scanned book keeps a scan's text away from training in
any form; ``--split-by work`` then takes their whole source volumes along.
"""

from __future__ import annotations

import json
import sys


def held_out(truth: dict) -> list[str]:
    """Scanned book ids (ISBN-13) followed by ``clear-<ID>`` of their passages."""
    scanned = {isbn: b for isbn, b in truth["books"].items() if b.get("has_scan")}
    passages = sorted({f"clear-{i}" for b in scanned.values() for i in b.get("clear_ids", [])})
    return sorted(scanned) + passages


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print("\n".join(held_out(json.load(f))))
