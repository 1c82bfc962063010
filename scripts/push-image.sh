#!/usr/bin/env bash
# Build the container image, tag it with the package version and the git sha, and push it.
#
#   scripts/push-image.sh --registry ghcr.io/acme                 # GHCR
#   scripts/push-image.sh --registry docker.io/acme               # Docker Hub
#   scripts/push-image.sh --registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com
#   scripts/push-image.sh --registry ghcr.io/acme --dry-run       # print the commands only
#
# Log in first (docker login / aws ecr get-login-password | docker login ...). Options:
#   --name NAME        image name (default shopvision)
#   --weights SOURCE   model build --weights (default resnet50-v1-12; `synthetic` for smoke images)
#   --platform P       e.g. linux/amd64 (default: the builder's)
#   --no-latest        do not move the `latest` tag
set -euo pipefail
cd "$(dirname "$0")/.."

registry="" name="shopvision" weights="resnet50-v1-12" platform="" dry_run=false latest=true
while [ $# -gt 0 ]; do
    case "$1" in
        --registry) registry="${2%/}"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --weights) weights="$2"; shift 2 ;;
        --platform) platform="$2"; shift 2 ;;
        --dry-run) dry_run=true; shift ;;
        --no-latest) latest=false; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$registry" ]; then
    echo "--registry is required (e.g. ghcr.io/acme)" >&2
    exit 2
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
sha="$(git rev-parse --short=12 HEAD)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    sha="${sha}-dirty"
fi
image="${registry}/${name}"
tags=("${image}:${version}" "${image}:${version}-${sha}")
if $latest; then
    tags+=("${image}:latest")
fi

build=(docker build -f deploy/Dockerfile --build-arg "WEIGHTS=${weights}"
       --label "org.opencontainers.image.version=${version}" --label "org.opencontainers.image.revision=${sha}")
if [ -n "$platform" ]; then
    build+=(--platform "$platform")
fi
for tag in "${tags[@]}"; do
    build+=(-t "$tag")
done
build+=(.)

run() {
    echo "+ $*"
    if ! $dry_run; then
        "$@"
    fi
}
run "${build[@]}"
for tag in "${tags[@]}"; do
    run docker push "$tag"
done
