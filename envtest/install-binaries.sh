#!/usr/bin/env bash
# Builds the control-plane binaries epslice's tests run against, from pinned Go modules.
#
#   envtest/install-binaries.sh [BINARY...]     (default: all of them)
#
# Binaries: etcd kube-apiserver kube-controller-manager kubectl kwok.
# Versions come from envtest/versions.env. Output goes to
#   ${EPSLICE_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/epslice/envtest}/<kubernetes-version>/bin
# and the last line printed on stdout is that directory (progress goes to stderr).
#
# - If KUBEBUILDER_ASSETS is set, the binaries in that directory are used and nothing is built.
# - Idempotent: each binary carries a stamp file with the version it was built from; a second run
#   checks the stamps and exits at once.
# - Safe to run concurrently (several test binaries starting at once): builds hold a file lock.
# - Needs the machine's Go >= 1.26.0 (the pinned modules' `go` line; GOTOOLCHAIN=local, no toolchain
#   download), python3, flock (util-linux) and the Go module proxy.
set -euo pipefail

# The epslice-envtest crate runs the copy of this script embedded in it, with the embedded
# versions.env in EPSLICE_ENVTEST_VERSIONS: a test binary then needs no source checkout, and
# runs exactly the installer and versions it was built with.
if [ -n "${EPSLICE_ENVTEST_VERSIONS:-}" ]; then
  eval "$EPSLICE_ENVTEST_VERSIONS"
  unset EPSLICE_ENVTEST_VERSIONS
else
  here=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
  # shellcheck source=versions.env
  source "$here/versions.env"
fi

ALL=(etcd kube-apiserver kube-controller-manager kubectl kwok)
if [ $# -gt 0 ]; then wanted=("$@"); else wanted=("${ALL[@]}"); fi
for b in "${wanted[@]}"; do
  case " ${ALL[*]} " in *" $b "*) ;; *) echo "install-binaries: unknown binary '$b' (known: ${ALL[*]})" >&2; exit 2 ;; esac
done

log() { printf '[envtest-install] %s\n' "$*" >&2; }
die() { printf 'envtest-install: error: %s\n' "$*" >&2; exit 1; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  missing=()
  for b in "${wanted[@]}"; do [ -x "$KUBEBUILDER_ASSETS/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks: ${missing[*]} (unset it to build them from Go modules)"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache_root=${EPSLICE_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/epslice/envtest}
top="$cache_root/$KUBERNETES_VERSION"
bin="$top/bin"

version_of() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    *) echo "$KUBERNETES_VERSION" ;;
  esac
}
is_current() {
  [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$(version_of "$1")" ] &&
    { [ "$1" != kwok ] || [ -s "$bin/kwok-stages.yaml" ]; }
}
todo() {
  local out=()
  for b in "${wanted[@]}"; do is_current "$b" || out+=("$b"); done
  echo "${out[@]:-}"
}

# Fast path: everything already built, no lock needed.
if [ -z "$(todo)" ]; then echo "$bin"; exit 0; fi

for tool in flock python3; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is not installed (needed to build the binaries); install it, or set KUBEBUILDER_ASSETS to a directory holding: ${wanted[*]}"
done
mkdir -p "$bin" "$top/build"
exec 9>"$top/.lock"
if ! flock -n 9; then
  log "another process is building the binaries; waiting for its lock ($top/.lock)"
  flock 9
fi
need=$(todo)
if [ -z "$need" ]; then echo "$bin"; exit 0; fi

command -v go >/dev/null 2>&1 || die "Go is not installed; install Go >= 1.26.0, or set KUBEBUILDER_ASSETS to a directory holding: ${wanted[*]}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
log "building: $need (Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION) into $bin"
log "a fresh machine needs about 9 minutes for all of them on 2 idle cores (longer while other builds share the cores); later runs reuse this cache"

t_all=$(date +%s)
step() { # step NAME CMD...: run a step with its elapsed time
  local name=$1; shift
  local t0; t0=$(date +%s)
  log "-> $name"
  "$@"
  log "   $name done in $(( $(date +%s) - t0 ))s"
}

probe_proxy() { # probe_proxy MODULE@VERSION: print the path of its go.mod, or fail with a clear message
  local out
  if ! out=$(cd "$(mktemp -d)" && printf 'module probe\ngo 1.26\n' > go.mod && go mod download -json "$1" 2>&1); then
    die "cannot fetch $1 from the Go module proxy ($(go env GOPROXY)): $(echo "$out" | grep -m1 -E 'Error|error|dial|Forbidden|Not Found' || echo "$out" | tail -n1). Set KUBEBUILDER_ASSETS to a directory with prebuilt binaries instead."
  fi
  python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])' <<<"$out"
}

stamp() { echo "$2" > "$bin/.$1.version"; }

build_kubernetes() {
  local cmds=("$@")
  local w="$top/build/kubernetes"
  local minor; minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$w"
  local upstream_gomod; upstream_gomod=$(probe_proxy "k8s.io/kubernetes@$KUBERNETES_VERSION")
  {
    printf 'module local/epslice-envtest-k8s\n\ngo 1.26\n\n'
    grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$upstream_gomod" |
      awk -v v="$staging" '{print "replace "$1" => "$1" "v}'
  } > "$w/go.mod"
  local pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$w" && step "go get k8s.io/kubernetes@$KUBERNETES_VERSION" go get "k8s.io/kubernetes@$KUBERNETES_VERSION" "${pkgs[@]/%/@$KUBERNETES_VERSION}")
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$w" && step "go build ${cmds[*]}" go build -trimpath -ldflags "$ld" -o "$w/out/" "${pkgs[@]}")
  for c in "${cmds[@]}"; do
    mv -f "$w/out/$c" "$bin/$c"
    stamp "$c" "$KUBERNETES_VERSION"
  done
}

build_etcd() {
  local w="$top/build/etcd"
  mkdir -p "$w"
  probe_proxy "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  printf 'module local/epslice-envtest-etcd\n\ngo 1.26\n' > "$w/go.mod"
  (cd "$w" && step "go get etcd $ETCD_VERSION" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  (cd "$w" && step "go build etcd" go build -trimpath -ldflags "-s -w" -o "$w/out/etcd" go.etcd.io/etcd/server/v3)
  mv -f "$w/out/etcd" "$bin/etcd"
  stamp etcd "$ETCD_VERSION"
}

build_kwok() {
  local w="$top/build/kwok"
  mkdir -p "$w"
  probe_proxy "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null
  printf 'module local/epslice-envtest-kwok\n\ngo 1.26\n' > "$w/go.mod"
  (cd "$w" && step "go get kwok $KWOK_VERSION" go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
  (cd "$w" && step "go build kwok" go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$w/out/kwok" sigs.k8s.io/kwok/cmd/kwok)
  mv -f "$w/out/kwok" "$bin/kwok"
  # kwok >= 0.8 loads no default stages: ship the release's own "fast" pod and node stages and
  # node heartbeats through leases, taken from the pinned module, as one --config file.
  local dir; dir=$(cd "$w" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  local f first=1
  : > "$bin/kwok-stages.yaml"
  for f in "$dir"/kustomize/stage/pod/fast/pod-*.yaml "$dir"/kustomize/stage/node/fast/node-*.yaml \
           "$dir"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml; do
    [ $first -eq 1 ] || echo '---' >> "$bin/kwok-stages.yaml"
    first=0
    cat "$f" >> "$bin/kwok-stages.yaml"
  done
  stamp kwok "$KWOK_VERSION"
}

k8s_cmds=()
for b in $need; do
  case "$b" in
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    *) k8s_cmds+=("$b") ;;
  esac
done
[ ${#k8s_cmds[@]} -eq 0 ] || build_kubernetes "${k8s_cmds[@]}"

got=$("$bin/kube-apiserver" --version 2>/dev/null || true)
if is_current kube-apiserver && [ "$got" != "Kubernetes $KUBERNETES_VERSION" ]; then
  die "built kube-apiserver reports '$got', expected 'Kubernetes $KUBERNETES_VERSION'"
fi
log "all binaries ready in $(( $(date +%s) - t_all ))s: $bin"
echo "$bin"
