"""Fuzz every reader of files that come from outside, for as long as you like.

    .venv/bin/python tests/fuzz/run.py [--minutes 60] [--targets aligned,state.json] [--seed 0]

The minutes are shared among the targets (tests/fuzz/targets.py). Each input is a seed file from
tests/fuzz/corpus/ damaged by hypothesis (bytes, or the data it holds), read as the workflow reads
it; anything but a parse or facelab's own one-line error, a read over 10 s or one that grows the
process by over 100 MB is a finding. Findings are written to tests/fuzz/findings/ (one input per
place of failure), and the run prints JSON and a table: inputs tried, parsed, refused, findings.
A finding that is fixed goes to tests/fuzz/corpus/regressions/<target>/, which the suite replays.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from facelab import progress  # noqa: E402
from tests.fuzz.engine import fuzz  # noqa: E402
from tests.fuzz.targets import TARGETS  # noqa: E402

FINDINGS = Path(__file__).resolve().parent / "findings"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="the whole run's time (default 60)")
    ap.add_argument("--targets", help=f"comma-separated (default: all): {', '.join(TARGETS)}")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    names = a.targets.split(",") if a.targets else list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"no target {unknown[0]!r}; the targets: {', '.join(TARGETS)}")
    progress.set_quiet(True)
    each = a.minutes * 60 / len(names)
    rows = []
    for name in names:
        stats = fuzz(TARGETS[name], each, seed=a.seed)
        saved = [str(f.save(FINDINGS).relative_to(ROOT)) for f in stats.findings]
        rows.append({"target": name, "seconds": round(stats.seconds, 1), "inputs": stats.inputs,
                     "parsed": stats.parsed, "refused": stats.refused,
                     "findings": [{"kind": f.kind, "where": f.where, "input": path, "detail": f.detail}
                                  for f, path in zip(stats.findings, saved, strict=True)]})  # fmt: skip
        print(f"{name}: {stats.inputs} inputs, {len(stats.findings)} findings", file=sys.stderr, flush=True)
    print(json.dumps({"seed": a.seed, "minutes": a.minutes, "targets": rows}, indent=1))
    print(f"\n{'target':<20}{'seconds':>9}{'inputs':>8}{'parsed':>8}{'refused':>9}{'findings':>10}")
    for r in rows:
        print(f"{r['target']:<20}{r['seconds']:>9}{r['inputs']:>8}{r['parsed']:>8}{r['refused']:>9}"
              f"{len(r['findings']):>10}")  # fmt: skip
        for f in r["findings"]:
            print(f"    {f['kind']}: {f['where']}  ({f['input']})")
    return 1 if any(r["findings"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
