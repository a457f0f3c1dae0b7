#!/usr/bin/env bash
# Builds the `peer_step` bench binary (cargo bench --no-run) and prints its path; used by
# compare.sh and run.sh. Usage: bash peer_step_bin.sh ROOT PYTHON
set -euo pipefail
root="$1" py="$2"
(cd "$root" && cargo bench --bench peer_step --no-run --message-format=json 2>/dev/null) | "$py" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "peer_step" and m.get("executable"):
        print(m["executable"])'
