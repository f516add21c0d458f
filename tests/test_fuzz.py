"""Every reader of files that come from outside, fuzzed for a bounded time (tests/fuzz/): the only
allowed outcomes are a parse or facelab's own clean error, within 10 s and 100 MB. Every input that
once broke a reader is replayed from tests/fuzz/corpus/regressions/. `tests/fuzz/run.py --minutes M`
runs the same targets for as long as you like."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install -e '.[dev]')")

from tests.fuzz.engine import check, fuzz, slug, warm_up  # noqa: E402
from tests.fuzz.targets import CORPUS, TARGETS  # noqa: E402

SECONDS = float(os.environ.get("FACELAB_FUZZ_SECONDS", "2"))  # per target; CI's budget
REGRESSIONS = sorted((CORPUS / "regressions").glob("*/*.bin"))
BY_SLUG = {slug(name): name for name in TARGETS}


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzzed_reader_parses_or_refuses_cleanly(name: str):
    stats = fuzz(TARGETS[name], SECONDS)
    assert stats.inputs >= 10, f"{name}: only {stats.inputs} inputs in {SECONDS} s"
    assert stats.parsed + stats.refused == stats.inputs - len(stats.findings)
    kept = Path(__file__).parent / "fuzz" / "findings"
    assert not stats.findings, "\n\n".join(
        f"{f.kind}: {f.where} (input kept in {f.save(kept)})\n{f.detail}" for f in stats.findings
    )


@pytest.mark.parametrize("path", REGRESSIONS, ids=[f"{p.parent.name}/{p.name}" for p in REGRESSIONS])
def test_inputs_that_once_broke_a_reader(path: Path):
    target = TARGETS[BY_SLUG[path.parent.name]]
    warm_up(target)
    outcome, finding = check(target, path.read_bytes())
    assert finding is None, f"{finding.kind}: {finding.where}\n{finding.detail}"
    assert outcome in ("parsed", "refused")


@pytest.mark.parametrize("name", ["aligned", "state.json", "merge_session.json", "--config train",
                                  "xseg labels"])  # fmt: skip
def test_a_10_mb_input_stays_under_100_mb(name: str):
    """A seed with 10 MB of junk after it (or inside its JSON, as a string): read or refused, and
    the process's peak grows by less than 100 MB."""
    seed = TARGETS[name].seeds()[0]
    warm_up(TARGETS[name])
    junk = b"\x00" * (10 << 20)
    inflated = seed[:-1] + b', "zz": "' + b"a" * (10 << 20) + b'"}' if seed.rstrip().endswith(b"}") else None
    for data in filter(None, (seed + junk, inflated)):
        outcome, finding = check(TARGETS[name], data)
        assert finding is None, f"{finding.kind}: {finding.where}\n{finding.detail}"
