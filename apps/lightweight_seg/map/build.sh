#!/usr/bin/env bash
# Build the CPU MAP image of lightweight-seg without pulling a base image (none can be pulled here, and the
# Holoscan packager's Dockerfile wants a CUDA base and CUDA torch):
#   1. a Debian bookworm minbase root file system with Python 3.11 (debootstrap; cached in $WORK/debootstrap),
#   2. a venv in it with CPU torch and the app's packages, installed in a chroot that sees the host's pip
#      configuration and local wheel folders through bind mounts,
#   3. the application, every model bundle (/opt/holoscan/models/<bundle>), the manifests and the entrypoint in the
#      MAP layout,
#   4. `podman build` of map/Dockerfile (FROM scratch) on vfs storage.
# Needs root, debootstrap and podman. Usage: build.sh [IMAGE_TAG]
set -euo pipefail

MAP_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$MAP_DIR/../../.." && pwd)
WORK=${MAP_BUILD_DIR:-$REPO/build/map}
IMAGE=${1:-lightweight-seg-map:0.1.0}
BUNDLES=${MAP_BUNDLES:-$REPO/bundle}  # the folder of model bundles to ship (every bundle in it is served)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$WORK/context/rootfs
HOST_PIP_PATHS=(/opt/wheels /opt/pypi /opt/pypi-more)  # local wheel folders of pip.conf, where present

if [ ! -d "$WORK/debootstrap" ]; then
    rm -rf "$WORK/debootstrap.partial"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
        bookworm "$WORK/debootstrap.partial" "$MIRROR"
    mv "$WORK/debootstrap.partial" "$WORK/debootstrap"
fi

rm -rf "$WORK/context"
mkdir -p "$WORK/context"
cp -a "$WORK/debootstrap" "$ROOT"
cp "$MAP_DIR/Dockerfile" "$WORK/context/Dockerfile"

mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" || true; done
}
trap cleanup EXIT
bind() {  # bind <host path> <path inside the root file system>
    mkdir -p "$ROOT$2"
    mount --bind "$1" "$ROOT$2"
    mounted+=("$ROOT$2")
}
bind /proc /proc
bind /dev /dev
for path in "${HOST_PIP_PATHS[@]}"; do if [ -d "$path" ]; then bind "$path" "$path"; fi; done
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle for pip (it may hold a proxy's certificate); Debian's own is put back afterwards.
cp "$ROOT/etc/ssl/certs/ca-certificates.crt" "$WORK/context/ca-certificates.crt.debian"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$ROOT/etc/pip.conf"; fi
if [ -d /etc/xdg/pip ]; then mkdir -p "$ROOT/etc/xdg" && cp -r /etc/xdg/pip "$ROOT/etc/xdg/pip"; fi

mkdir -p "$ROOT/tmp/requirements"
cp "$REPO/requirements.txt" "$ROOT/tmp/requirements/constraints.txt"
cp "$MAP_DIR/requirements.txt" "$ROOT/tmp/requirements/runtime.txt"
cp "$REPO/apps/lightweight_seg/requirements.txt" "$REPO/apps/lightweight_seg/requirements-sdk.txt" \
    "$ROOT/tmp/requirements/"
PIP=(chroot "$ROOT" /opt/holoscan/venv/bin/pip install -q --no-cache-dir)
chroot "$ROOT" python3 -m venv /opt/holoscan/venv
"${PIP[@]}" -r /tmp/requirements/runtime.txt -c /tmp/requirements/constraints.txt
"${PIP[@]}" -r /tmp/requirements/requirements.txt
"${PIP[@]}" --no-deps -r /tmp/requirements/requirements-sdk.txt
cleanup
mounted=()
mv "$WORK/context/ca-certificates.crt.debian" "$ROOT/etc/ssl/certs/ca-certificates.crt"

# The application (the SDK's applicationRoot), its packages on PYTHONPATH, the bundle, manifests, entrypoint.
mkdir -p "$ROOT/opt/holoscan/lib" "$ROOT/opt/holoscan/models" "$ROOT/etc/holoscan" \
    "$ROOT/var/holoscan/input" "$ROOT/var/holoscan/output" "$ROOT/var/holoscan/logs" "$ROOT/opt/holoscan/docs"
cp -r "$REPO/apps/lightweight_seg" "$ROOT/opt/holoscan/app"
rm -rf "$ROOT/opt/holoscan/app/map" "$ROOT/opt/holoscan/app/bundles"  # the link to bundle/: models/ serves them
cp -r "$REPO/lightweight_nets" "$ROOT/opt/holoscan/lib/lightweight_nets"
ln -s /opt/holoscan/app "$ROOT/opt/holoscan/lib/lightweight_seg"
for bundle in "$BUNDLES"/*/; do
    [ -f "$bundle/configs/inference.json" ] || continue
    target="$ROOT/opt/holoscan/models/$(basename "$bundle")"
    mkdir -p "$target"
    for part in configs models docs data LICENSE; do
        if [ -e "$bundle/$part" ]; then cp -r "$bundle/$part" "$target/"; fi
    done
done
cp "$MAP_DIR/app.json" "$ROOT/etc/holoscan/"
# pkg.json names the bundles this image really holds (MAP_BUNDLES may hold others than the repository's).
python3 - "$MAP_DIR/pkg.json" "$ROOT/etc/holoscan/pkg.json" "$ROOT/opt/holoscan/models" <<'PY'
import json, pathlib, sys
manifest = json.loads(pathlib.Path(sys.argv[1]).read_text())
root = manifest["modelRoot"]
manifest["models"] = {p.name: f"{root}/{p.name}" for p in sorted(pathlib.Path(sys.argv[3]).iterdir()) if p.is_dir()}
pathlib.Path(sys.argv[2]).write_text(json.dumps(manifest, indent=2) + "\n")
PY
cp "$REPO/apps/lightweight_seg/app.yaml" "$ROOT/var/holoscan/app.yaml"
install -m 755 "$MAP_DIR/tools" "$ROOT/var/holoscan/tools"

# What a run does not need.
rm -rf "$ROOT/tmp/requirements" "$ROOT/etc/pip.conf" "$ROOT/etc/xdg/pip" "$ROOT/var/cache/apt/"*.bin \
    "$ROOT/var/lib/apt/lists/"* "$ROOT/usr/share/doc" "$ROOT/usr/share/man" "$ROOT/usr/share/locale"
find "$ROOT/opt/holoscan" -name __pycache__ -type d -prune -exec rm -rf {} +

podman --storage-driver=vfs build --quiet -t "$IMAGE" "$WORK/context"
rm -rf "$WORK/context"
echo "built $IMAGE"
