#!/usr/bin/env bash
# Build the two images of churn-serve with podman, on the stand-in base image when no
# python:3.11-slim exists locally:
# - the service: `bentoml build` of the champion, then `bentoml containerize` of that Bento;
# - the jobs (CronJobs: churn drift, performance, retrain-check, train): the project from uv.lock.
#
#   k8s/image/build.sh        # = make image; prints the service then the jobs image reference
#   IMAGE=registry.example/churn-serve JOBS_IMAGE=registry.example/churn-jobs k8s/image/build.sh
#
# Idempotent: the base is built once and reused (delete it with
# `podman rmi docker.io/library/python:3.11-slim` to rebuild it); podman's layer cache makes a
# rebuild with unchanged requirements cost the Bento build plus the last layers. The image is
# tagged <IMAGE>:<bento version> (what `kustomize edit set image churn-serve=...` takes) and
# <IMAGE>:latest, the jobs image <JOBS_IMAGE>:<the same version> and :latest. Environment:
# BENTOML_HOME (the store holding the champion), IMAGE, JOBS_IMAGE, DEBIAN_MIRROR (default: the
# machine's own Debian mirror, read from its apt sources).
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# crun fails on this machine type's cgroups and ulimits; the project's config picks runc.
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"
export BENTOML_DO_NOT_TRACK="${BENTOML_DO_NOT_TRACK:-true}"
IMAGE="${IMAGE:-churn-serve}"
JOBS_IMAGE="${JOBS_IMAGE:-churn-jobs}"
BENTOML="${BENTOML:-$REPO/.venv/bin/bentoml}"
BASE_IMAGE="docker.io/library/python:3.11-slim"  # what the Bento's Dockerfile starts FROM
DEBIAN_IMAGE="localhost/churn-serve-debian:bookworm"

log() { echo "[image] $*" >&2; }

WORK="$(mktemp -d)"  # debootstrap root and build context; removed however the script ends
trap 'rm -rf "$WORK"' EXIT

# The first Debian archive the machine's apt uses (deb822 `URIs:` or one-line `deb` entries),
# so the build goes through whatever mirror or proxy this machine is allowed to reach.
debian_mirror() {
    local uri
    uri="$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
              grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                  sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}'; } |
            grep -v -- '-security' | head -n 1)"
    [[ -n "$uri" ]] || { log "no Debian mirror in /etc/apt sources: set DEBIAN_MIRROR"; exit 2; }
    echo "$uri"
}

build_debian_image() {
    command -v debootstrap >/dev/null || { log "debootstrap missing: make image-deps"; exit 2; }
    [[ "$(id -u)" == 0 ]] || { log "debootstrap needs root (or provide $BASE_IMAGE)"; exit 2; }
    local mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
    log "debootstrap bookworm (minbase) from the machine's apt mirror"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 20 "$WORK/debootstrap.log" >&2; exit 2; }
    tar -C "$WORK/rootfs" -c . | podman import --quiet - "$DEBIAN_IMAGE" >/dev/null
}

build_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        log "base $BASE_IMAGE present: reused"
        return
    fi
    podman image exists "$DEBIAN_IMAGE" || build_debian_image
    mkdir "$WORK/base"
    cp "$HERE/base.Containerfile" "$WORK/base/Containerfile"
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/base/ca-certificates.crt"
    log "building the stand-in $BASE_IMAGE"
    podman build --quiet --network host -t "$BASE_IMAGE" "$WORK/base" >/dev/null
}

build_service_image() {
    local tag
    tag="$(cd "$REPO" && "$BENTOML" build --output tag | tail -n 1)"
    tag="${tag#__tag__:}"
    VERSION="${tag#*:}"
    log "containerizing Bento $tag"
    (cd "$REPO" && "$BENTOML" containerize "$tag" --backend podman --opt network=host \
        -t "$IMAGE:$VERSION" -t "$IMAGE:latest") >&2
}

build_jobs_image() {
    # The context is what jobs.Containerfile copies, not the working tree (.venv, .churn).
    mkdir -p "$WORK/jobs/project"
    # The packages are pyproject.toml's own list (tool.setuptools.packages.find), so a new
    # package reaches the image without an edit here.
    local packages
    packages="$(cd "$REPO" && "$REPO/.venv/bin/python" -c 'import tomllib
for name in tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["packages"]["find"]["include"]:
    print(name.rstrip("*"))')"
    # shellcheck disable=SC2086 # one word per package
    (cd "$REPO" && tar -c --exclude=__pycache__ pyproject.toml uv.lock README.md churn_cli.py \
        configs $packages) | tar -x -C "$WORK/jobs/project"
    cp "$HERE/jobs.Containerfile" "$WORK/jobs/Containerfile"
    log "building the jobs image"
    podman build --quiet --network host -t "$JOBS_IMAGE:$VERSION" -t "$JOBS_IMAGE:latest" \
        "$WORK/jobs" >/dev/null
}

command -v podman >/dev/null || { log "podman missing: make image-deps"; exit 2; }
build_base_image
build_service_image
build_jobs_image
echo "$IMAGE:$VERSION"
echo "$JOBS_IMAGE:$VERSION"
