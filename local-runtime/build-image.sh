#!/usr/bin/env bash
# Build the Lambda-compatible image that `sam local` and the tests run the functions in, offline:
# Debian trixie's python3 (3.13, the template's Runtime), AWS's runtime interface client and boto3 in
# /var/runtime (what the Lambda Python runtime provides), the bootstrap beside them, and the runtime
# interface emulator that ships with the SAM CLI as the entry point (as in AWS's own base images).
#
# usage: local-runtime/build-image.sh TAG RIE_BINARY
#   PYTHON         a python with pip, used to download the runtime's wheels for Python 3.13 (default python3)
#   DEBIAN_MIRROR  where debootstrap fetches Debian (default: the Debian archive apt uses on this machine,
#                  else debootstrap's own default)
#
# Does nothing when TAG exists with the recipe label of these exact inputs (this script, requirements.txt,
# bootstrap, the emulator binary), so it is cheap to call before every run. Needs root, debootstrap and a
# reachable Docker daemon; says which one is missing.
set -euo pipefail

tag=${1:?usage: build-image.sh TAG RIE_BINARY}
rie=${2:?usage: build-image.sh TAG RIE_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
# The first "URIs:" (deb822) or "deb" line of apt's own sources: the archive this machine already reaches.
apt_mirror() {
    awk '$1 == "URIs:" { print $2; exit } $1 == "deb" { print ($2 ~ /^\[/ ? $3 : $2); exit }' \
        /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null || true
}
mirror=${DEBIAN_MIRROR:-$(apt_mirror)}
suite=trixie # its python3 is 3.13, the template's Runtime
runtime_python=3.13
recipe_label=bigpickle.recipe

fail() {
    echo "build-image.sh: $*" >&2
    exit 1
}

[ -x "$rie" ] || fail "the runtime interface emulator $rie is missing: run \`make infra-tools\` (it ships with the SAM CLI)"
docker info >/dev/null 2>&1 || fail "no Docker daemon answers (\`docker info\` failed): install docker.io and start dockerd"

recipe=$(cat "$0" "$here/requirements.txt" "$here/bootstrap" "$rie" | sha256sum | cut -c1-16)
current=$(docker image inspect --format "{{ index .Config.Labels \"$recipe_label\" }}" "$tag" 2>/dev/null || true)
if [ "$current" = "$recipe" ]; then
    echo "image $tag is up to date (recipe $recipe)"
    exit 0
fi

[ "$(id -u)" = 0 ] || fail "debootstrap needs root"
command -v debootstrap >/dev/null || fail "debootstrap is missing: apt-get install -y debootstrap"

rootfs=$(mktemp -d /var/tmp/bigpickle-lambda-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $suite (minbase + python3) into $rootfs"
debootstrap --variant=minbase --include=python3,ca-certificates "$suite" "$rootfs" ${mirror:+"$mirror"} >"$rootfs.log" 2>&1 ||
    fail "debootstrap failed; last lines of $rootfs.log:$(echo; tail -20 "$rootfs.log")"
rm -f "$rootfs.log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc "$rootfs"/usr/share/man

echo "runtime interface client and boto3 for Python $runtime_python into /var/runtime"
"$python" -m pip install --quiet --disable-pip-version-check --target "$rootfs/var/runtime" \
    --python-version "$runtime_python" --implementation cp --platform "manylinux2014_$(uname -m)" \
    --only-binary=:all: -r "$here/requirements.txt"
install -m 0755 "$here/bootstrap" "$rootfs/var/runtime/bootstrap"
install -D -m 0755 "$rie" "$rootfs/var/rapid/aws-lambda-rie"
mkdir -p "$rootfs/var/task" "$rootfs/opt"

echo "docker import -> $tag"
tar -C "$rootfs" -c . | docker import \
    --change 'ENTRYPOINT ["/var/rapid/aws-lambda-rie"]' \
    --change 'WORKDIR /var/task' \
    --change 'ENV LANG=C.UTF-8 TZ=:UTC LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime' \
    --change "LABEL $recipe_label=$recipe" \
    - "$tag" >/dev/null
echo "built $tag (recipe $recipe)"
