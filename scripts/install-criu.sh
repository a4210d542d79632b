#!/usr/bin/env bash
# Install CRIU 4.x to /usr/local/sbin/criu, built from Debian's source package.
#
# Why: bookworm's criu 3.17 cannot checkpoint on recent kernels, and the trixie/sid
# binary packages need a newer glibc. The sid source (.orig tarball) builds on bookworm
# in ~35 s. Idempotent: does nothing when the installed binary was built with the current
# local patches and `criu check` passes. The system apt sources are not touched: the
# Debian suites are read through an alternate apt configuration under $WORK.
#
# A fresh machine must not depend on what sid holds today: CRIU_VERSION is preferred, then
# every other 4.x source in $CRIU_SUITES, newest first. If no CRIU can be downloaded and
# built, this warns and exits 0 (CRIU_STRICT=1: exits 1): the server serves anyway, pause
# with memory, snapshots and fork answer 503 and `GET /health` says why.
set -euo pipefail

CRIU_VERSION="${CRIU_VERSION:-4.2.1}"
CRIU_SUITES="${CRIU_SUITES-sid trixie trixie-backports bookworm-backports}"   # "" = none (offline)
CRIU_STRICT="${CRIU_STRICT:-0}"
PREFIX_BIN="${CRIU_BIN:-/usr/local/sbin/criu}"
WORK="${CRIU_WORK:-/var/cache/sandlot/criu-build}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD_DEPS="build-essential pkg-config libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev \
protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev libnftables-dev \
libgnutls28-dev uuid-dev libaio-dev"
PATCHES_ID="sandlot-rlimits1-userns1"   # bump when the local patches change
PATCHES="criu-rlimits-fallback.py criu-userns-netns.py"

STAMP="${PREFIX_BIN}.build-id"
if [ -x "$PREFIX_BIN" ] && [[ "$(cat "$STAMP" 2>/dev/null)" == *"+${PATCHES_ID}" ]] \
   && "$PREFIX_BIN" --version 2>/dev/null | grep -q "Version: 4\." \
   && "$PREFIX_BIN" check >/dev/null 2>&1; then
    exit 0
fi

give_up() {
    echo "warning: $*" >&2
    echo "warning: no CRIU at $PREFIX_BIN: Sandlot will serve without memory pause/resume, snapshots" \
         "and fork (they answer 503; GET /health says why). Retry: scripts/install-criu.sh" >&2
    [ "$CRIU_STRICT" = 1 ] && exit 1
    exit 0
}

# build VERSION TARBALL: extract, patch, compile, install; non-zero when it did not work
build() {
    local version="$1" tarball="$2" dir="$WORK/src/criu-$1" patched=1
    rm -rf "$dir"
    tar -C "$WORK/src" -xf "$tarball" || return 1
    [ -d "$dir" ] || { echo "warning: $tarball has no criu-$version/" >&2; return 1; }
    for p in $PATCHES; do
        python3 "$HERE/$p" "$dir" || { echo "warning: $p does not apply to CRIU $version" >&2; patched=0; }
    done
    [ "$patched" = 1 ] || [ "${CRIU_UNPATCHED_OK:-0}" = 1 ] || return 1
    echo "Building CRIU ${version} (about a minute)..."
    make -C "$dir" -j"$(nproc)" criu >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log" >&2; echo "warning: CRIU $version build failed (log: $WORK/build.log)" >&2; return 1; }
    "$dir/criu/criu" check >/dev/null 2>&1 \
        || { echo "warning: CRIU $version: \`criu check\` fails on this kernel" >&2; return 1; }
    install -D -m 0755 "$dir/criu/criu" "$PREFIX_BIN"
    if [ "$patched" = 1 ]; then echo "${version}+${PATCHES_ID}" > "$STAMP"; else echo "${version}+unpatched" > "$STAMP"; fi
    echo "Installed $("$PREFIX_BIN" --version | head -1) at $PREFIX_BIN"
}

missing=$(for p in $BUILD_DEPS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } \
        || give_up "could not install CRIU's build dependencies"
fi
mkdir -p "$WORK/apt/etc" "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"

# 1. a tarball of the preferred version already downloaded: no network needed
for tarball in "$WORK/src/criu_${CRIU_VERSION}.orig.tar."*; do
    [ -s "$tarball" ] && build "$CRIU_VERSION" "$tarball" && exit 0
done

# 2. whatever Debian offers: the preferred version first, then every other 4.x, newest first
: > "$WORK/apt/etc/sources.list"
for suite in $CRIU_SUITES; do
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
        >> "$WORK/apt/etc/sources.list"
done
APT_OPTS=(-o "Dir::Etc::sourcelist=$WORK/apt/etc/sources.list" -o "Dir::Etc::sourceparts=/nonexistent"
          -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache")
apt-get "${APT_OPTS[@]}" update -qq || echo "warning: some of the suites ($CRIU_SUITES) could not be read" >&2
mapfile -t offered < <(apt-cache "${APT_OPTS[@]}" showsrc criu 2>/dev/null | sed -n 's/^Version: //p' | sort -u)
candidates=()
for v in "${offered[@]}"; do [[ "${v%%-*}" == "$CRIU_VERSION" ]] && candidates+=("$v"); done
while read -r v; do
    [ -n "$v" ] && [[ "${v%%-*}" != "$CRIU_VERSION" ]] && [[ "$v" == 4.* ]] && candidates+=("$v")
done < <(printf '%s\n' "${offered[@]}" | sort -r -V)
[ "${#candidates[@]}" -gt 0 ] || give_up "Debian ($CRIU_SUITES) offers no CRIU 4.x source"
[[ "${candidates[0]%%-*}" == "$CRIU_VERSION" ]] \
    || echo "warning: CRIU $CRIU_VERSION is not in $CRIU_SUITES any more; trying ${candidates[*]}" >&2

for v in "${candidates[@]}"; do
    upstream="${v%%-*}"
    upstream="${upstream#*:}"
    # Only the .orig tarball is needed; the .debian.tar.xz may 404 on mirrors.
    (cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source --download-only "criu=$v" >/dev/null 2>&1 || true)
    for tarball in "$WORK/src/criu_${upstream}.orig.tar."*; do
        [ -s "$tarball" ] && build "$upstream" "$tarball" && exit 0
    done
    echo "warning: CRIU $v could not be downloaded or built; trying the next one" >&2
done
give_up "none of CRIU ${candidates[*]} could be built here"
