#!/usr/bin/env bash
# Static checks of the launch recipes in deploy/, runnable on any Linux machine: no Slurm, no
# Kubernetes cluster, no container engine and no GPU needed, and nothing is launched.
#
#   bash deploy/check.sh
#
# 1. shell scripts: `bash -n`, and shellcheck when it is installed (apt-get install shellcheck);
#    the `sh -c` entrypoints embedded in the Kubernetes manifests: `sh -n` (+ shellcheck -s sh)
# 2. the Slurm script's control flow: deploy/slurm/dry-run.sh (stub srun/scontrol/binaries)
# 3. Kubernetes manifests: YAML parse (PyYAML; installed into a temporary directory with pip
#    when missing), every document has apiVersion, kind and metadata.name; the manifests agree
#    with each other (ports, worker count, Secret, run config = deploy/examples/sinusoid.toml);
#    schema validation with kubernetes-validate and `kubectl kustomize` when installed
# 4. example configs: TOML parse (python3 tomllib), only known TrainConfig keys; and, when a
#    built meta-coord is found ($META_COORD, target/release/meta-coord or PATH), a 1-step
#    `meta-coord train --config FILE` in a temporary directory, which is the authoritative check
# 5. Containerfile: FROM lines present, every base image pinned to a tag that is not
#    `latest` (ARG defaults resolved), COPY --from names an existing stage, the ignore file
#    keeps data/ and crates/ in the context; hadolint when installed
#
# Exits non-zero if any check fails. A check whose tool is missing is reported as SKIP.
set -uo pipefail

deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$deploy/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

passed=0 failed=0 skipped=0
ok() { echo "PASS  $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }
skip() { echo "SKIP  $*"; skipped=$((skipped + 1)); }
# run "description" command...: PASS/FAIL on the exit status, output shown on failure.
run() {
  local what="$1"; shift
  if "$@" > "$tmp/out" 2>&1; then ok "$what"; else bad "$what"; sed 's/^/      /' "$tmp/out"; fi
}
rel() { echo "${1#"$repo"/}"; }

have_python=0
if command -v python3 > /dev/null 2>&1; then have_python=1; fi

# ------------------------------------------------------------------------------ 1. shell
echo "== shell scripts"
mapfile -t scripts < <(find "$deploy" -type f \( -name '*.sh' -o -name '*.sbatch' \) | sort)
have_shellcheck=0
if command -v shellcheck > /dev/null 2>&1; then have_shellcheck=1; fi
for f in "${scripts[@]}"; do
  run "bash -n $(rel "$f")" bash -n "$f"
  if [[ $have_shellcheck -eq 1 ]]; then
    run "shellcheck $(rel "$f")" shellcheck -x "$f"
  fi
done
if [[ $have_shellcheck -eq 0 ]]; then
  skip "shellcheck not installed (apt-get install -y shellcheck): scripts checked with bash -n only"
fi

# ------------------------------------------------------------------------------ 2. slurm dry run
echo "== Slurm script control flow (stubs, nothing submitted)"
run "deploy/slurm/dry-run.sh" bash "$deploy/slurm/dry-run.sh"

# ------------------------------------------------------------------------------ 3. kubernetes
echo "== Kubernetes manifests"
mapfile -t manifests < <(find "$deploy/k8s" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
yaml_python=""
if [[ $have_python -eq 0 ]]; then
  skip "python3 not found: YAML manifests not parsed"
elif python3 -c 'import yaml' > /dev/null 2>&1; then
  yaml_python="python3"
else
  echo "      PyYAML missing: installing it into a temporary directory with pip"
  if python3 -m pip install --quiet --disable-pip-version-check --target "$tmp/pylib" pyyaml \
       > "$tmp/pip.log" 2>&1 && PYTHONPATH="$tmp/pylib" python3 -c 'import yaml' > /dev/null 2>&1; then
    yaml_python="env PYTHONPATH=$tmp/pylib python3"
  else
    skip "PyYAML missing and 'pip install pyyaml' failed: YAML manifests not parsed ($(tail -1 "$tmp/pip.log"))"
  fi
fi

if [[ -n "$yaml_python" ]]; then
  # Parses every manifest, checks each document's identity fields, cross-checks the
  # manifests, and writes the embedded `sh -c` scripts to $tmp/embedded-*.sh.
  cat > "$tmp/check_k8s.py" <<'PY'
import pathlib, re, sys
import yaml

deploy, out_dir, files = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
failures = []
docs = []
for f in files:
    name = str(pathlib.Path(f).relative_to(deploy.parent))
    try:
        loaded = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    except yaml.YAMLError as e:
        print(f"FAIL  YAML parse {name}: {e}".replace("\n", " "))
        failures.append(name)
        continue
    problems = []
    for i, d in enumerate(loaded):
        if not isinstance(d, dict):
            problems.append(f"document {i} is not a mapping")
            continue
        for key in ("apiVersion", "kind"):
            if not d.get(key):
                problems.append(f"document {i} has no {key}")
        if not (d.get("metadata") or {}).get("name"):
            problems.append(f"document {i} ({d.get('kind')}) has no metadata.name")
        docs.append((name, d))
    if not loaded:
        problems.append("no documents")
    if problems:
        print(f"FAIL  YAML {name}: " + "; ".join(problems))
        failures.append(name)
    else:
        kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in loaded)
        print(f"PASS  YAML parse + apiVersion/kind/metadata.name: {name} ({kinds})")

def find(kind, name):
    for _, d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None

def containers(d):
    return (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []

def cross(what, cond, detail=""):
    if cond:
        print(f"PASS  {what}")
    else:
        print(f"FAIL  {what}{': ' + detail if detail else ''}")
        failures.append(what)

# Embedded shell entrypoints.
n = 0
for name, d in docs:
    for c in containers(d):
        cmd = list(c.get("command") or []) + list(c.get("args") or [])
        if len(cmd) >= 3 and cmd[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and cmd[1] == "-c":
            n += 1
            shell = "bash" if "bash" in cmd[0] else "sh"
            path = out_dir / f"embedded-{n}-{shell}.sh"
            path.write_text(cmd[2])
            (out_dir / f"embedded-{n}-{shell}.name").write_text(f"{name}: {d['kind']}/{d['metadata']['name']} container {c['name']}")

coord = find("Job", "metasched-coordinator")
workers = find("Job", "metasched-workers")
svc = find("Service", "metasched-coordinator")
cm = find("ConfigMap", "metasched-run-config")
if coord and workers and svc and cm:
    ccmd = " ".join(map(str, (containers(coord)[0].get("command") or []) + (containers(coord)[0].get("args") or [])))
    wcmd = [str(x) for x in containers(workers)[0].get("command") or []]
    listens = set(re.findall(r"--listen\s+0\.0\.0\.0:(\d+)", ccmd))
    expects = set(re.findall(r"--expect-workers\s+(\d+)", ccmd))
    cross("coordinator: both branches listen on one port", len(listens) == 1, str(listens))
    ports = {p["port"] for p in svc["spec"]["ports"]} | {p["targetPort"] for p in svc["spec"]["ports"]}
    cross("Service port = coordinator --listen port", listens == {str(p) for p in ports}, f"{listens} vs {ports}")
    coord_arg = wcmd[wcmd.index("--coord") + 1] if "--coord" in wcmd else ""
    cross("workers --coord = Service name:port",
          coord_arg == f"{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}", coord_arg)
    cross("workers parallelism = coordinator --expect-workers",
          expects == {str(workers["spec"].get("parallelism"))}, f"{expects} vs {workers['spec'].get('parallelism')}")
    secrets = set()
    for d in (coord, workers):
        for e in containers(d)[0].get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {})
            if e["name"] == "METASCHED_TOKEN" and ref:
                secrets.add((ref["name"], ref["key"]))
    secret = find("Secret", "metasched-token")
    cross("coordinator and workers read METASCHED_TOKEN from the same Secret key",
          len(secrets) == 1 and secret is not None and next(iter(secrets))[1] in (secret.get("stringData") or secret.get("data") or {}),
          str(secrets))
    try:
        import tomllib
        example = tomllib.loads((deploy / "examples" / "sinusoid.toml").read_text())
        inline = tomllib.loads(cm["data"]["run.toml"])
        cross("ConfigMap run.toml = deploy/examples/sinusoid.toml", inline == example,
              f"differs in {sorted(k for k in set(inline) | set(example) if inline.get(k) != example.get(k))}")
    except ModuleNotFoundError:
        print("SKIP  ConfigMap run.toml vs examples/sinusoid.toml: python3 has no tomllib (needs 3.11+)")
else:
    cross("coordinator Job, workers Job, Service and ConfigMap present", False)
sys.exit(1 if failures else 0)
PY
  # shellcheck disable=SC2086 # $yaml_python is a command with its environment
  $yaml_python "$tmp/check_k8s.py" "$deploy" "$tmp" "${manifests[@]}" > "$tmp/k8s.out" 2>&1
  k8s_rc=$?
  cat "$tmp/k8s.out"
  passed=$((passed + $(grep -c '^PASS' "$tmp/k8s.out")))
  failed=$((failed + $(grep -c '^FAIL' "$tmp/k8s.out")))
  skipped=$((skipped + $(grep -c '^SKIP' "$tmp/k8s.out")))
  if [[ $k8s_rc -ne 0 && $(grep -c '^FAIL' "$tmp/k8s.out") -eq 0 ]]; then
    bad "manifest check script crashed (exit $k8s_rc)"
  fi

  for f in "$tmp"/embedded-*.sh; do
    [[ -e "$f" ]] || continue
    where="$(cat "${f%.sh}.name")"
    if [[ "$f" == *-bash.sh ]]; then
      run "bash -n of the embedded script in $where" bash -n "$f"
      dialect="bash"
    else
      run "sh -n of the embedded script in $where" sh -n "$f"
      dialect="sh"
    fi
    if [[ $have_shellcheck -eq 1 ]]; then
      run "shellcheck -s $dialect of the embedded script in $where" shellcheck -s "$dialect" "$f"
    fi
  done
fi

schema_files=()
for f in "${manifests[@]}"; do
  [[ "$(basename "$f")" == kustomization.yaml ]] || schema_files+=("$f")
done
if command -v kubernetes-validate > /dev/null 2>&1; then
  for f in "${schema_files[@]}"; do
    run "kubernetes-validate --strict (API schema) $(rel "$f")" kubernetes-validate --strict --quiet "$f"
  done
else
  skip "kubernetes-validate not installed (pip install kubernetes-validate): no API schema validation"
fi
if command -v kubectl > /dev/null 2>&1; then
  run "kubectl kustomize deploy/k8s (offline render)" timeout 120 kubectl kustomize "$deploy/k8s"
else
  skip "kubectl not installed: kustomization not rendered"
fi

# ------------------------------------------------------------------------------ 4. examples
echo "== example run configurations"
mapfile -t configs < <(find "$deploy/examples" -type f -name '*.toml' | sort)
if [[ $have_python -eq 1 ]] && python3 -c 'import tomllib' > /dev/null 2>&1; then
  for f in "${configs[@]}"; do
    run "TOML parse + known TrainConfig keys: $(rel "$f")" python3 - "$f" <<'PY'
import sys, tomllib
# The fields of TrainConfig (crates/coord/src/train/config.rs); meta-coord rejects others.
KNOWN = {"task", "shots", "query", "ways", "layers", "activation", "loss", "scheduler", "hidden",
         "inner_steps", "lr_min", "lr_max", "lr_init", "lr_fixed", "first_order", "learn_init",
         "meta_batch", "meta_lr", "clip_norm", "steps", "seed", "workers", "threads",
         "eval_every", "checkpoint_every", "log_every", "eval_tasks", "final_eval_tasks",
         "eval_query", "inner_optimizer", "momentum", "adam_beta1", "adam_beta2", "adam_eps",
         "dataset", "batch_size", "estimator", "window", "objective", "pes_sigma", "remat"}
cfg = tomllib.load(open(sys.argv[1], "rb"))
unknown = sorted(set(cfg) - KNOWN)
if unknown:
    sys.exit(f"unknown keys: {unknown}")
if not isinstance(cfg.get("task"), str):
    sys.exit("no task")
PY
  done
else
  skip "python3 with tomllib (3.11+) not found: example configs not parsed"
fi

meta_coord="${META_COORD:-}"
if [[ -z "$meta_coord" && -x "$repo/target/release/meta-coord" ]]; then
  meta_coord="$repo/target/release/meta-coord"
fi
if [[ -z "$meta_coord" ]] && command -v meta-coord > /dev/null 2>&1; then
  meta_coord="$(command -v meta-coord)"
fi
if [[ -n "$meta_coord" ]]; then
  for f in "${configs[@]}"; do
    run "meta-coord train --config $(rel "$f") accepted (1 step, temporary directory)" \
      "$meta_coord" train --config "$f" --steps 1 --eval-every 0 --checkpoint-every 0 \
        --final-eval-tasks 2 --out "$tmp/run-$(basename "$f" .toml)"
  done
else
  skip "no built meta-coord (cargo build --release --locked, or set META_COORD): configs not run"
fi

# ------------------------------------------------------------------------------ 5. container
echo "== Containerfile"
containerfile="$deploy/container/Containerfile"
if [[ $have_python -eq 1 ]]; then
  run "FROM lines present, base images pinned (no latest), COPY --from stages exist" \
    python3 - "$containerfile" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
# Join continuation lines, drop comments.
lines = [l for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.lstrip().startswith("#")]
args, stages, froms, problems = {}, set(), [], []
seen_from = False
for l in lines:
    word, _, rest = l.strip().partition(" ")
    word = word.upper()
    if word == "ARG" and not seen_from:
        k, _, v = rest.strip().partition("=")
        args[k] = v.strip().strip('"')
    elif word == "FROM":
        seen_from = True
        parts = rest.split()
        parts = [p for p in parts if not p.startswith("--platform")]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), parts[0])
        froms.append(image)
        if "$" in image:
            problems.append(f"FROM {parts[0]}: unresolved variable")
        elif image not in stages and image != "scratch":
            name = image.split("@")[0].rsplit("/", 1)[-1]
            if "@sha256:" not in image and ":" not in name:
                problems.append(f"FROM {image}: no tag (means latest)")
            elif name.endswith(":latest"):
                problems.append(f"FROM {image}: latest tag")
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    elif word == "COPY":
        m = re.search(r"--from=(\S+)", rest)
        if m and m.group(1) not in stages:
            problems.append(f"COPY --from={m.group(1)}: no such stage")
if not froms:
    problems.append("no FROM line")
if re.search(r":latest\b", text):
    problems.append("the text mentions a :latest tag")
if problems:
    sys.exit("; ".join(problems))
print("base images:", ", ".join(froms))
PY
  sed -n 's/^/      /p' "$tmp/out" | grep 'base images' || true
else
  run "FROM lines present" grep -qE '^FROM ' "$containerfile"
  skip "python3 not found: base image tags not checked"
fi
ignore="$deploy/container/Containerfile.dockerignore"
run "ignore file present and keeps data/ and crates/ in the build context" \
  bash -c "test -f '$ignore' && ! grep -qE '^[[:space:]]*/?(data|crates)(/|\$)' '$ignore' && grep -qx target '$ignore'"
if command -v hadolint > /dev/null 2>&1; then
  run "hadolint deploy/container/Containerfile" hadolint --no-color "$containerfile"
else
  skip "hadolint not installed: Containerfile not linted"
fi

# ------------------------------------------------------------------------------ summary
echo "== $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
