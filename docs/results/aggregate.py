#!/usr/bin/env python3
"""Builds the result tables of docs/RESULTS.md from runs/results/*/eval.json.

Each table row is one line of experiments.txt, averaged over training seeds 0, 1, 2; the
row's command regenerates it. Standard library only. Run from the repository root:
    python3 docs/results/aggregate.py
"""
import json
import os
import re
import statistics
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXPERIMENTS = os.path.join(ROOT, "docs", "results", "experiments.txt")
RESULTS = os.path.join(ROOT, "docs", "RESULTS.md")
SEEDS = [0, 1, 2]
# Published sinusoid figures (query MSE after one inner step, trained and tested at the same
# shot count): Li et al. 2017, "Meta-SGD", Table 1.
# Li et al. 2017 (Meta-SGD), Table 1: only the 5-shot figures could be checked against the paper.
PAPER = {5: ("1.13", "0.90"), 10: ("unchecked", "unchecked"), 20: ("unchecked", "unchecked")}


def experiments():
    for line in open(EXPERIMENTS, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        ident, table, label, flags = (part.strip() for part in line.split("|"))
        yield ident, table, label, flags


def load(ident):
    runs = []
    for seed in SEEDS:
        path = os.path.join(ROOT, "runs", "results", f"{ident}-s{seed}", "eval.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                runs.append(json.load(f))
    return runs


def summary(values, scale=1.0, digits=3):
    if not values:
        return "not run", ""
    vals = [v * scale for v in values]
    mean = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
    per_seed = ", ".join(f"{v:.{digits}f}" for v in vals)
    note = "" if len(vals) == len(SEEDS) else f" ({len(vals)} of {len(SEEDS)} seeds)"
    return f"**{mean:.{digits}f}** ± {sd:.{digits}f}{note}", per_seed


def command(flags):
    return f"`for s in 0 1 2; do meta-coord train {flags} --seed $s; done`"


def sinusoid_table():
    rows = [
        "| setting | query MSE (mean ± sd over seeds) | per seed | MAML (paper) | Meta-SGD (paper) | command |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for ident, table, label, flags in experiments():
        if table != "sinusoid":
            continue
        shots = int(re.search(r"--shots (\d+)", flags).group(1))
        mean, per_seed = summary([r["mean"] for r in load(ident)])
        maml, metasgd = PAPER[shots]
        rows.append(f"| {label} | {mean} | {per_seed} | {maml} | {metasgd} | {command(flags)} |")
    return "\n".join(rows)


def digits_table():
    rows = [
        "| setting | query accuracy % (mean ± sd over seeds) | per seed | query cross-entropy | command |",
        "| --- | --- | --- | --- | --- |",
    ]
    for ident, table, label, flags in experiments():
        if table != "digits":
            continue
        runs = load(ident)
        acc, per_seed = summary([r.get("accuracy", float("nan")) for r in runs], scale=100.0, digits=2)
        loss, _ = summary([r["mean"] for r in runs])
        rows.append(f"| {label} | {acc} | {per_seed} | {loss} | {command(flags)} |")
    return "\n".join(rows)


def replace(text, name, body):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit(f"{RESULTS}: markers {begin} … {end} not found")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def main():
    with open(RESULTS, encoding="utf-8") as f:
        text = f.read()
    text = replace(text, "sinusoid", sinusoid_table())
    text = replace(text, "digits", digits_table())
    tmp = RESULTS + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, RESULTS)
    print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
