#!/usr/bin/env bash
# Installs what drpipe's tests, demo and benchmarks need, idempotently:
# Debian packages (only when a command is missing) and Go-built tools
# cached under $DRPIPE_TOOLS (default ~/.cache/drpipe-tools/bin).
set -euo pipefail

TOOLS="${DRPIPE_TOOLS:-$HOME/.cache/drpipe-tools/bin}"
mkdir -p "$TOOLS"

# command -> Debian package
declare -A PKG=(
  [mkfs.ext4]=e2fsprogs
  [debugfs]=e2fsprogs
  [chattr]=e2fsprogs
  [qemu-img]=qemu-utils
  [restic]=restic
  [borg]=borgbackup
  [rsync]=rsync
  [fusermount3]=fuse3
  [virsh]=libvirt-clients
  [virt-xml-validate]=libvirt-clients
  [xmllint]=libxml2-utils
  [virt-install]=virtinst
  [qemu-system-x86_64]=qemu-system-x86
  [chromium]=chromium
  [iptables]=iptables
  [nft]=nftables
  [ip]=iproute2
  [tc]=iproute2
  [strace]=strace
  [/usr/bin/time]=time
  [gcc]=gcc
)
# Optional groups can be skipped: DRPIPE_DEPS_SKIP="chromium qemu-system-x86_64"
skip=" ${DRPIPE_DEPS_SKIP:-} "

missing=()
for cmd in "${!PKG[@]}"; do
  [[ "$skip" == *" $cmd "* ]] && continue
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
# cgo (the C zstd encoder) needs libc headers and, for the static binary,
# libc.a besides the compiler (libc6-dev has both). With gcc but without
# them a cgo build fails; `make build` then falls back to a pure-Go build.
[ -e /usr/include/stdlib.h ] || missing+=(libc6-dev)
if ((${#missing[@]})); then
  mapfile -t uniq < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "deps: installing Debian packages: ${uniq[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${uniq[@]}" >/dev/null
fi

# versitygw: a real S3 server for the S3 tier tests (built once, cached).
if [[ "$skip" != *" versitygw "* ]] && [ ! -x "$TOOLS/versitygw" ]; then
  echo "deps: building versitygw v1.7.0 into $TOOLS (once, about 1.5 minutes)"
  GOBIN="$TOOLS" GOFLAGS=-mod=mod go install github.com/versity/versitygw/cmd/versitygw@v1.7.0
fi
echo "deps: ok"
