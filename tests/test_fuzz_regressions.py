"""Every input the fuzzer (`make fuzz`) ever crashed on, replayed through its target."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fuzz_targets import TARGETS

ROOT = Path(__file__).parent / "fuzz_regressions"
CASES = sorted(p for p in ROOT.glob("*/*") if p.is_file() and p.parent.name in TARGETS)


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_fuzzer_crash_stays_fixed(case: Path) -> None:
    TARGETS[case.parent.name](case.read_bytes())


def test_there_are_regression_inputs() -> None:
    assert CASES, "tests/fuzz_regressions holds no inputs"
