"""Coverage-guided fuzzing (atheris) of the header reader, the grouping rules and the STOW-RS
multipart parser: `make fuzz` (FUZZ_SECONDS each, default 60).

    python scripts/fuzz.py TARGET SECONDS    # one target, in this process (atheris)
    python scripts/fuzz.py all SECONDS       # every target, each in its own process

A crash is written to tests/fuzz_regressions/TARGET/crash-<sha1>; fix it and keep the file: the
regression test (tests/test_fuzz_regressions.py) replays every file there. Prints, per target,
runs, coverage (features), corpus size and crashes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"


def run_one(target: str, seconds: int) -> None:
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["mammo_node", "pydicom", "python_multipart"]):
        from tests.helpers.fuzz_targets import TARGETS
    fn = TARGETS[target]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    seeds = REGRESSIONS / target
    for seed in seeds.glob("*"):
        (corpus / seed.name).write_bytes(seed.read_bytes())
    out = REGRESSIONS / target
    out.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [
            sys.argv[0],
            str(corpus),
            f"-max_total_time={seconds}",
            f"-artifact_prefix={out}/",
            "-rss_limit_mb=2048",
            "-max_len=8192",
            "-print_final_stats=1",
        ],
        fn,
    )
    atheris.Fuzz()


def run_all(seconds: int) -> int:
    figures = {}
    failed = 0
    for target in ("header", "rules", "multipart"):
        before = set((REGRESSIONS / target).glob("crash-*"))
        run = subprocess.run(
            [sys.executable, __file__, target, str(seconds)], capture_output=True, text=True
        )
        text = run.stderr
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
        features = re.findall(r"ft: (\d+)", text)
        corpus = re.findall(r"corp: (\d+)", text)
        crashes = sorted(set((REGRESSIONS / target).glob("crash-*")) - before)
        figures[target] = {
            "seconds": seconds,
            "runs": int(runs[-1]) if runs else None,
            "features": int(features[-1]) if features else None,
            "corpus": int(corpus[-1]) if corpus else None,
            "new_crashes": [c.name for c in crashes],
            "exit": run.returncode,
        }
        if crashes or run.returncode != 0:
            failed += 1
            sys.stderr.write(text[-3000:])
    print(json.dumps(figures, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    name, secs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60
    if name == "all":
        sys.exit(run_all(secs))
    run_one(name, secs)
