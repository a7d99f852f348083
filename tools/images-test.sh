#!/usr/bin/env bash
# Build both images with podman from a debootstrap'd Debian bookworm base and run them for real
# (tests/images/test_images_run.py): the operator image against the API emulator, the CPU stage
# image's extract and cluster-select on the quick demo stream — non-root, read-only root
# filesystem, /tmp the only writable path. `make images-test`; docs/install.md explains it.
#
# Why not the Dockerfiles' public bases: this machine reaches package registries but no container
# registry, so the base image is made locally. Everything podman keeps (storage, base rootfs)
# lives under $IMAGES_WORK, not in /var/lib/containers, so that other users of podman here are
# untouched and a cold run is `rm -rf $IMAGES_WORK`.
#
# Needs root and: apt-get install -y podman buildah runc debootstrap
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${IMAGES_WORK:-/var/tmp/adaptinf-images}
BASE=localhost/adaptinf-base:bookworm
OPERATOR=localhost/adaptinf-operator:test
STAGE=localhost/adaptinf-stage:test-cpu
CA=${IMAGES_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
WHEELS=${IMAGES_WHEELS:-/opt/wheels}   # a local torch 2.13.0+cpu wheel, if this machine has one

for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || { echo "images-test: $tool missing (apt-get install -y podman buildah runc debootstrap)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "images-test: needs root (debootstrap, rootful podman)" >&2; exit 2; }

mkdir -p "$WORK/conf"
# crun (podman's default) refuses this machine's hybrid cgroups: runc with cgroupfs works. The
# default RLIMIT_NOFILE ulimit podman sets exceeds what this (nested) container may grant.
cat > "$WORK/conf/containers.conf" <<EOF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
# overlay works on this ext4 root; set IMAGES_STORAGE_DRIVER=vfs where it does not (slow, big).
cat > "$WORK/conf/storage.conf" <<EOF
[storage]
driver = "${IMAGES_STORAGE_DRIVER:-overlay}"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_CONF=$WORK/conf/containers.conf CONTAINERS_STORAGE_CONF=$WORK/conf/storage.conf

t0=$SECONDS
step() { echo "images-test: [$((SECONDS - t0))s] $*"; }

if ! podman image exists "$BASE"; then
    step "debootstrap bookworm (minbase + python3, venv, pip)"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$WORK/rootfs" \
        > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >/dev/null
    rm -rf "$WORK/rootfs"
fi

# pip inside the build reaches the registry over the host's network, trusting the host's CA
# bundle (a TLS-intercepting proxy here); both only at build time (ARGs, a build-time mount).
build=(podman build --network host --layers --build-arg "PYTHON_IMAGE=$BASE"
       -v "$CA:/etc/ssl/host-ca.pem:ro" --build-arg PIP_CERT=/etc/ssl/host-ca.pem)
step "build $OPERATOR"
"${build[@]}" -f images/operator/Dockerfile -t "$OPERATOR" . > "$WORK/build-operator.log" 2>&1 \
    || { tail -30 "$WORK/build-operator.log"; exit 1; }
stage_args=()
if ls "$WHEELS"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    # download.pytorch.org is not reachable here; the same wheel lies on disk.
    stage_args=(-v "$WHEELS:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels --build-arg TORCH_INDEX_URL=)
fi
step "build $STAGE (CPU)"
"${build[@]}" "${stage_args[@]}" -f images/stage/Dockerfile.cpu -t "$STAGE" . > "$WORK/build-stage.log" 2>&1 \
    || { tail -30 "$WORK/build-stage.log"; exit 1; }
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep adaptinf- || true

step "run the images (tests/images)"
# A basetemp of its own: pytest prunes /tmp/pytest-of-USER/ to the last 3 sessions, which other
# pytest runs on a shared machine would do under this one's feet.
IMAGES_OPERATOR=$OPERATOR IMAGES_STAGE=$STAGE "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider \
    --basetemp="$WORK/pytest" tests/images "$@"
step "done"
