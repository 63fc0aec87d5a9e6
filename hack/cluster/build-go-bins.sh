#!/usr/bin/env bash
# Build Go programs the cluster needs from their Go modules (through the Go module proxy).
#
#   build-go-bins.sh k8s     VERSION OUTDIR   # kube-apiserver, kube-controller-manager, kube-scheduler,
#                                             # kubelet, kube-proxy, kubectl from k8s.io/kubernetes
#   build-go-bins.sh kubeadm VERSION OUTDIR   # kubeadm from k8s.io/kubernetes (kind's node image)
#   build-go-bins.sh etcd    VERSION OUTDIR   # etcd from go.etcd.io/etcd/server/v3
#   build-go-bins.sh coredns VERSION OUTDIR   # coredns (trimmed plugin set) from github.com/coredns/coredns
#   build-go-bins.sh helm    VERSION OUTDIR   # helm from helm.sh/helm/v3
#   build-go-bins.sh prometheus VERSION OUTDIR  # prometheus and promtool (Kubernetes SD only, no web UI
#                                             # assets) from github.com/prometheus/prometheus (v0.3XX.Y)
#   build-go-bins.sh kubeconform VERSION OUTDIR  # kubeconform from github.com/yannh/kubeconform
#   build-go-bins.sh actionlint VERSION OUTDIR   # actionlint from github.com/rhysd/actionlint
#   build-go-bins.sh kind VERSION OUTDIR         # the kind CLI from sigs.k8s.io/kind
#   build-go-bins.sh crictl VERSION OUTDIR       # crictl from sigs.k8s.io/cri-tools (kind's node image)
#   build-go-bins.sh kube-router VERSION OUTDIR  # kube-router (its NetworkPolicy firewall) from
#                                             # github.com/cloudnativelabs/kube-router/v2
#   build-go-bins.sh compose VERSION OUTDIR      # docker-compose (Compose v2, standalone or CLI plugin)
#                                             # from github.com/docker/compose/v5
#   build-go-bins.sh minio VERSION OUTDIR        # the MinIO server (S3-compatible) from github.com/minio/minio
#
# Each build happens in a throwaway module next to OUTDIR (OUTDIR/../src) that requires the wanted
# version. Binaries are written to OUTDIR.tmp and renamed to OUTDIR only when all succeeded, so a
# half-finished build is never mistaken for a cached one.
set -euo pipefail

kind=$1 version=$2 out=$3
src="$(dirname "$out")/src-$kind"
rm -rf "$src" "$out.tmp"
mkdir -p "$src" "$out.tmp"
cd "$src"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"
export CGO_ENABLED=0
ldflags="-s -w"
tags=""

requiring() {  # the throwaway module: requires module $1 at $version
    printf 'module mlmodel.local/%sbuild\n\ngo 1.26\n\nrequire %s %s\n' "$kind" "$1" "$version" >go.mod
}

case $kind in
k8s | kubeadm)
    # k8s.io/kubernetes vX.Y.Z depends on its staging modules at v0.0.0 with replace lines to
    # ./staging; a consumer must pin each one to the matching published v0.Y.Z.
    minor=${version#v1.}; minor=${minor%%.*}
    staging="v0.${version#v1.}"
    cat >go.mod <<MOD
module mlmodel.local/k8sbuild

go 1.25.0

require k8s.io/kubernetes $version

replace (
MOD
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
        cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
        cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
        kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
        mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
        echo "	k8s.io/$m => k8s.io/$m $staging" >>go.mod
    done
    echo ")" >>go.mod
    pkgs=""
    commands="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
    if [ "$kind" = kubeadm ]; then commands=kubeadm; fi
    for c in $commands; do
        pkgs="$pkgs k8s.io/kubernetes/cmd/$c"
    done
    # Version stamping so `kubectl version` and the Node object show the real version.
    vars=""
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        vars="$vars -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        vars="$vars -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    ldflags="$ldflags $vars"
    ;;
etcd)
    cat >go.mod <<MOD
module mlmodel.local/etcdbuild

go 1.23

require go.etcd.io/etcd/server/v3 $version
MOD
    pkgs="go.etcd.io/etcd/server/v3"
    ;;
coredns)
    # CoreDNS used as a library with only the plugins our Corefile and kubeadm's need (metrics is
    # kubeadm's `prometheus :9153`): the full plugin set drags in every cloud SDK and doubles the
    # build time. Changing this list: bump versions.COREDNS_PLUGINS, which names the cache.
    cat >go.mod <<MOD
module mlmodel.local/corednsbuild

go 1.24

require github.com/coredns/coredns $version
MOD
    mkdir -p coredns
    cat >coredns/main.go <<'GO'
// Command coredns is CoreDNS with the plugins a test cluster needs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

var _ = dnsserver.Directives

func main() { coremain.Run() }
GO
    pkgs="./coredns"
    ;;
helm)
    requiring helm.sh/helm/v3
    pkgs="helm.sh/helm/v3/cmd/helm"
    ldflags="$ldflags -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ;;
prometheus)
    requiring github.com/prometheus/prometheus
    pkgs="github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool"
    # Module version v0.3XX.Y is Prometheus 3.XX.Y.
    minor=${version#v0.}; minor=${minor%%.*}
    ldflags="$ldflags -X github.com/prometheus/common/version.Version=3.$((minor - 300)).${version##*.}"
    tags="netgo,remove_all_sd,enable_kubernetes_sd"
    ;;
kubeconform)
    requiring github.com/yannh/kubeconform
    pkgs="github.com/yannh/kubeconform/cmd/kubeconform"
    ;;
actionlint)
    requiring github.com/rhysd/actionlint
    pkgs="github.com/rhysd/actionlint/cmd/actionlint"
    ldflags="$ldflags -X github.com/rhysd/actionlint.version=$version"
    ;;
kind)
    requiring sigs.k8s.io/kind
    pkgs="sigs.k8s.io/kind"
    ;;
crictl)
    requiring sigs.k8s.io/cri-tools
    pkgs="sigs.k8s.io/cri-tools/cmd/crictl"
    ldflags="$ldflags -X sigs.k8s.io/cri-tools/pkg/version.Version=$version"
    ;;
kube-router)
    requiring github.com/cloudnativelabs/kube-router/v2
    pkgs="github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
    ldflags="$ldflags -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$version"
    ;;
compose)
    requiring github.com/docker/compose/v5
    pkgs="github.com/docker/compose/v5/cmd"
    # As upstream's Makefile stamps it (`docker-compose version`, the CLI plugin's metadata).
    ldflags="$ldflags -X github.com/docker/compose/v5/internal.Version=$version"
    ;;
minio)
    requiring github.com/minio/minio
    pkgs="github.com/minio/minio"
    ;;
*)
    echo "unknown kind $kind" >&2
    exit 2
    ;;
esac

echo "[build-go-bins] $kind $version: resolving modules in $src"
if [ "$kind" = coredns ]; then
    go mod tidy
elif [ "$kind" = prometheus ]; then
    # Only the module: `go build -mod=mod` then fetches just what the tagged build imports
    # (resolving every package would download the SDK of each service discovery left out).
    go get "github.com/prometheus/prometheus@$version"
else
    # shellcheck disable=SC2086
    go get $(for p in $pkgs; do echo "$p@$version"; done)
fi
if [ "$kind" = helm ]; then
    # Helm's default Kubernetes version (`helm template`, lint) is that of its client-go, as its
    # own Makefile stamps it; unstamped it would be v1.20.
    kminor=$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
    for p in pkg/lint/rules pkg/chartutil; do
        ldflags="$ldflags -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$kminor"
    done
fi
echo "[build-go-bins] $kind $version: compiling"
# shellcheck disable=SC2086
go build -trimpath -tags="$tags" -ldflags="$ldflags" -o "$out.tmp/" $pkgs
if [ "$kind" = etcd ]; then mv "$out.tmp/server" "$out.tmp/etcd"; fi
if [ "$kind" = compose ]; then mv "$out.tmp/cmd" "$out.tmp/docker-compose"; fi
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$out.tmp" "$out"
ls -l "$out"
