#!/usr/bin/env python3
"""Writes the tables of docs/RESULTS.md's "Applying a learned schedule" from the outputs that
docs/results/apply.sh saved (runs/apply/NAME.txt), between the markers
`<!-- apply tables: begin -->` and `<!-- apply tables: end -->`. Usage (from the repository
root): python3 docs/results/apply_tables.py"""

import pathlib
import re
import sys

ROWS = [  # (run name, heading)
    ("sgd-H1000", "Training setting, inner SGD (digits, 64-32-10, H = 1000)"),
    ("adam-H1000", "Training setting, inner Adam (digits, 64-32-10, H = 1000)"),
    ("sgd-H2000", "Horizon 2× (SGD)"),
    ("adam-H2000", "Horizon 2× (Adam)"),
    ("sgd-H10000", "Horizon 10× (SGD)"),
    ("adam-H10000", "Horizon 10× (Adam)"),
    ("sgd-wide", "Wider learner, same depth (SGD)"),
    ("adam-wide", "Wider learner, same depth (Adam)"),
    ("sgd-deep", "Deeper learner: 4 layers, 8 groups, for a 2-layer scheduler (SGD)"),
    ("adam-deep", "Deeper learner (Adam)"),
    ("sgd-sinusoid", "Other dataset: a digits-trained scheduler on sinusoid regression (SGD)"),
    ("adam-sinusoid", "Other dataset (Adam)"),
]
BEGIN, END = "<!-- apply tables: begin -->", "<!-- apply tables: end -->"


def flags_of(name: str, script: str) -> str:
    for line in script.splitlines():
        if line.startswith(name + "|"):
            _, ckpt, flags = line.split("|", 2)
            return ckpt, flags.strip()
    sys.exit(f"{name} is not in docs/results/apply.sh")


def main() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    script = (root / "docs/results/apply.sh").read_text()
    parts = []
    for name, heading in ROWS:
        out = root / "runs/apply" / f"{name}.txt"
        if not out.exists():
            sys.exit(f"{out} missing: run bash docs/results/apply.sh first")
        text = out.read_text()
        table = [l for l in text.splitlines() if l.startswith("|")]
        best = [l for l in text.splitlines() if l.startswith("best baseline:")]
        secs = re.search(r" in ([0-9.]+) s$", text.strip())
        ckpt, flags = flags_of(name, script)
        cmd = f"meta-coord apply --checkpoint runs/apply/{ckpt}/checkpoint.safetensors"
        cmd += f" {flags}" if flags else ""
        cmd += f" --out runs/apply/{name}"
        took = f" ({secs.group(1)} s)" if secs else ""
        parts.append(f"### {heading}\n\n`{cmd}`{took}\n\n" + "\n".join(table) + "\n\n"
                     + (best[0].split(";")[0] + "." if best else "") + "\n")
    results = root / "docs/RESULTS.md"
    doc = results.read_text()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"docs/RESULTS.md lacks the markers {BEGIN} / {END}")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    results.write_text(head + BEGIN + "\n" + "\n".join(parts) + END + tail)
    print(f"wrote {len(parts)} tables into docs/RESULTS.md")


if __name__ == "__main__":
    main()
