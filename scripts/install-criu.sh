#!/usr/bin/env bash
# Install CRIU 4.2.x to /usr/local/sbin/criu, built from Debian's source package.
#
# Why: bookworm's criu 3.17 cannot checkpoint on recent kernels, and the trixie/sid
# binary packages need a newer glibc. The sid source (.orig tarball) builds on bookworm
# in ~35 s. Idempotent: does nothing when the installed binary is 4.2.x and
# `criu check` passes. The system apt sources are not touched: sid is read through an
# alternate apt configuration under $WORK.
set -euo pipefail

CRIU_VERSION="${CRIU_VERSION:-4.2.1}"
PREFIX_BIN="${CRIU_BIN:-/usr/local/sbin/criu}"
WORK="${CRIU_WORK:-/var/cache/sandlot/criu-build}"
BUILD_DEPS="build-essential pkg-config libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev \
protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev libnftables-dev \
libgnutls28-dev uuid-dev libaio-dev"

BUILD_ID="${CRIU_VERSION}+sandlot-rlimits1-userns1"   # bump when the local patches change
STAMP="${PREFIX_BIN}.build-id"
if [ -x "$PREFIX_BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$BUILD_ID" ] \
   && "$PREFIX_BIN" --version 2>/dev/null | grep -q "Version: ${CRIU_VERSION%.*}" \
   && "$PREFIX_BIN" check >/dev/null 2>&1; then
    exit 0
fi

echo "Building CRIU ${CRIU_VERSION} from Debian's source package (about a minute)..."
missing=$(for p in $BUILD_DEPS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

mkdir -p "$WORK/apt/etc" "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
tarball="$WORK/src/criu_${CRIU_VERSION}.orig.tar.xz"
if [ ! -s "$tarball" ]; then
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
        > "$WORK/apt/etc/sources.list"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$WORK/apt/etc/sources.list" -o "Dir::Etc::sourceparts=/nonexistent"
              -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache")
    apt-get "${APT_OPTS[@]}" update -qq
    # Only the .orig tarball is needed; the .debian.tar.xz may 404 on mirrors.
    (cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source --download-only "criu=${CRIU_VERSION}-1" || true)
    [ -s "$tarball" ] || { echo "error: could not download criu_${CRIU_VERSION}.orig.tar.xz from Debian sid" >&2; exit 1; }
fi

rm -rf "$WORK/src/criu-${CRIU_VERSION}"
tar -C "$WORK/src" -xf "$tarball"
python3 "$(dirname "$0")/criu-rlimits-fallback.py" "$WORK/src/criu-${CRIU_VERSION}"
python3 "$(dirname "$0")/criu-userns-netns.py" "$WORK/src/criu-${CRIU_VERSION}"
make -C "$WORK/src/criu-${CRIU_VERSION}" -j"$(nproc)" criu >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log" >&2; echo "error: CRIU build failed (log: $WORK/build.log)" >&2; exit 1; }
install -D -m 0755 "$WORK/src/criu-${CRIU_VERSION}/criu/criu" "$PREFIX_BIN"
echo "$BUILD_ID" > "$STAMP"
"$PREFIX_BIN" check || { echo "error: $PREFIX_BIN check failed on this kernel" >&2; exit 1; }
echo "Installed $("$PREFIX_BIN" --version | head -1) at $PREFIX_BIN"
