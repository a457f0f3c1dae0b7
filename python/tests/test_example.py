"""The example script runs end to end on a checkpoint of the digits learner it expects."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_mlp.py"


def test_digits_example_runs(run, work):
    ck = work / "example-digits10.safetensors"
    run("init", "--out", ck, "--layers", "64,32,10", "--loss", "cross_entropy", "--lr-max", 1.0,
        "--lr-init", 0.2, "--lr-fixed", 0.2, "--inner-steps", 8, "--force")
    r = subprocess.run([sys.executable, str(EXAMPLE), str(ck), "--problems", "2"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(re.findall(r"step +\d+ +train loss", r.stdout)) == 16, r.stdout
    accs = [float(a) for a in re.findall(r"test accuracy ([\d.]+)%", r.stdout)]
    assert len(accs) == 2 and all(a > 15 for a in accs)  # chance: 10%, r.stdout
    # A learner of the wrong shape is refused with one line.
    bad = work / "example-sinusoid.safetensors"
    run("init", "--out", bad, "--force")
    r = subprocess.run([sys.executable, str(EXAMPLE), str(bad)], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "need a 64-...-N cross_entropy learner" in r.stderr
