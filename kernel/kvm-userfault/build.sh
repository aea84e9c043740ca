#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Builds Debian's 6.12 kvm.ko, kvm-amd.ko and kvm-intel.ko with Ferry's KVM patches (0*.patch, in
# name order: KVM Userfault, then in-place memslot resize), cached.
#
#   kernel/kvm-userfault/build.sh [--rebuild]
#
# stdout: ONLY the output directory, ${FERRY_KVM_CACHE:-/var/cache/ferry/kvm-guest}/userfault-modules/<key>/
#         holding vmlinuz, krel, vermagic, build-seconds, timings, versions, stock/*.ko (KVM and socket diag), patched/*.ko.
# stderr: one line per step, the build time, and a loud line if the pinned kernel is no longer served.
# env:    FERRY_KVM_CACHE (cache root), FERRY_KVM_JOBS (make -j, default 2),
#         FERRY_KVM_KEEP_WORK=1 (keep the unpacked, built source tree under userfault-work/).
# A complete cached output is found without touching the network and in well under a second.
# Nothing is installed and the machine's apt sources are not touched: packages are fetched with
# `apt-get download` under a private apt state in the cache and unpacked with dpkg-deb -x.
#
# Build tools this script needs (Debian package names, for the project's ./dev setup):
NEEDS="bc bison flex libelf-dev libssl-dev dwarves gcc-12 binutils make xz-utils kmod patch"

KVER=6.12.118   # the ONE pinned kernel version: image, headers (+common), kbuild and source

set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATCHES=("$HERE"/0*.patch)  # applied in name order
CACHE="${FERRY_KVM_CACHE:-/var/cache/ferry/kvm-guest}"
JOBS="${FERRY_KVM_JOBS:-2}"
SUITE="deb http://deb.debian.org/debian-security bookworm-security main"
REBUILD=0
[ "${1:-}" = "--rebuild" ] && REBUILD=1

log() { echo "kvm-userfault: $*" >&2; }
die() { echo "kvm-userfault: ERROR: $*" >&2; exit 1; }

key_for() {  # key = sha256(patches + build.sh + kernel version), truncated
  { cat "${PATCHES[@]}" "$HERE/build.sh"; echo "kernel=$1"; } | sha256sum | cut -c1-16
}
complete() { [ -f "$1/complete" ]; }

MODS="$CACHE/userfault-modules"
KEY=$(key_for "$KVER")
OUT="$MODS/$KEY"
if [ "$REBUILD" = 0 ]; then
  if complete "$OUT"; then echo "$OUT"; exit 0; fi
  # The pinned version was not served when this key was built: a fallback build is recorded.
  if [ -f "$MODS/fallback-$KEY" ] && complete "$(cat "$MODS/fallback-$KEY")"; then
    log "WARNING: pinned kernel $KVER is not served any more; using cached fallback $(cat "$(cat "$MODS/fallback-$KEY")/krel")"
    cat "$MODS/fallback-$KEY"; exit 0
  fi
fi

# One build per cache at a time; a build that finished while we waited is used as is.
mkdir -p "$MODS"
exec 9>"$MODS/.lock"
flock 9
if [ "$REBUILD" = 0 ] && complete "$OUT"; then echo "$OUT"; exit 0; fi

T_START=$(date +%s.%N)
secs_since() { echo "$(date +%s.%N) - $1" | bc | xargs printf '%.1f'; }

# ---- tools ----------------------------------------------------------------------------------------
missing=()
for t in flock bc bison flex pahole x86_64-linux-gnu-gcc-12 x86_64-linux-gnu-strip make xz modinfo patch dpkg-deb apt-get sha256sum; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ -f /usr/include/libelf.h ] || missing+=("libelf.h")
[ -f /usr/include/openssl/ssl.h ] || missing+=("openssl/ssl.h")
[ ${#missing[@]} = 0 ] || die "missing tools: ${missing[*]} (apt-get install $NEEDS)"
[ -f "${PATCHES[0]}" ] || die "no patch in $HERE"

# ---- packages (private apt state; .debs cached) --------------------------------------------------
APT="$CACHE/userfault-apt"; DEBS="$CACHE/userfault-debs"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DEBS" "$MODS"
echo "$SUITE" > "$APT/sources.list"
APTO=(-o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o Dir::State::status=/var/lib/dpkg/status)
pkgs_for() {  # $1 = 6.12.N -> the five package names
  echo "linux-source-6.12 linux-headers-$1+deb12-amd64 linux-headers-$1+deb12-common linux-kbuild-$1+deb12 linux-image-$1+deb12-amd64"
}
have_debs() {  # all five .debs of kernel $1 already downloaded?
  local n
  for n in $(pkgs_for "$1"); do
    if [ "$n" = linux-source-6.12 ]; then ls "$DEBS"/linux-source-6.12_"$1"-*_all.deb >/dev/null 2>&1 || return 1
    else ls "$DEBS/${n}_$1"-*.deb >/dev/null 2>&1 || return 1; fi
  done
}
apt_updated=0
apt_update() {
  [ $apt_updated = 1 ] && return 0
  log "step: apt-get update (private state in $APT, $SUITE)"
  apt-get "${APTO[@]}" update >/dev/null 2>&1 || die "apt-get update failed (private state $APT)"
  apt_updated=1
}
debver_for() {  # newest Debian version string of linux-source-6.12 for kernel $1 that has all packages
  local v n
  for v in $(apt-cache "${APTO[@]}" madison linux-source-6.12 | awk -v k="$1" '$3 ~ "^"k"-" {print $3}'); do
    for n in $(pkgs_for "$1"); do
      apt-cache "${APTO[@]}" show "$n=$v" >/dev/null 2>&1 || continue 2
    done
    echo "$v"; return 0
  done
  return 1
}

T0=$(date +%s.%N)
K="$KVER"
if ! have_debs "$K"; then
  apt_update
  if ! DEBVER=$(debver_for "$K"); then
    K=""
    for cand in $(apt-cache "${APTO[@]}" madison linux-source-6.12 | awk '{print $3}' | sed 's/-.*//' | sort -uVr); do
      if DEBVER=$(debver_for "$cand"); then K="$cand"; break; fi
    done
    [ -n "$K" ] || die "no 6.12.N in bookworm-security has all of: $(pkgs_for N)"
    echo "kvm-userfault: WARNING: pinned kernel $KVER is no longer served by bookworm-security; FALLING BACK to $K ($DEBVER)" >&2
  fi
  if ! have_debs "$K"; then
    log "step: apt-get download $(pkgs_for "$K") (version $DEBVER) into $DEBS"
    pkgv=(); for n in $(pkgs_for "$K"); do pkgv+=("$n=$DEBVER"); done
    (cd "$DEBS" && apt-get "${APTO[@]}" download "${pkgv[@]}" 2>&1 | grep -v -e unsandboxed -e '^Get:' -e '^Fetched' >&2 || true)
    have_debs "$K" || die "download of kernel $K packages failed"
  fi
fi
T_DL=$(secs_since "$T0")
deb_of() {  # $1 = package name, $2 = kernel
  if [ "$1" = linux-source-6.12 ]; then ls "$DEBS"/linux-source-6.12_"$2"-*_all.deb | sort -V | tail -1
  else ls "$DEBS/${1}_$2"-*.deb | sort -V | tail -1; fi
}
if [ "$K" != "$KVER" ]; then   # fallback: its own key; remember it for the pinned key's fast path
  KEY=$(key_for "$K"); OUT="$MODS/$KEY"
  if [ "$REBUILD" = 0 ] && complete "$OUT"; then echo "$OUT" > "$MODS/fallback-$(key_for "$KVER")"; echo "$OUT"; exit 0; fi
fi
KREL="$K+deb12-amd64"
log "step: kernel $K, release $KREL, key $KEY (downloads ${T_DL}s)"

# ---- unpack ----------------------------------------------------------------------------------------
WORK="$CACHE/userfault-work/$KEY"
rm -rf "$WORK"; mkdir -p "$WORK/pkg"
for t in "$CACHE/userfault-work"/.trash-*; do   # left over from an interrupted background delete
  [ -d "$t" ] && (setsid rm -rf "$t" </dev/null >/dev/null 2>&1 &)   # a concurrent rm of it is harmless
done
T0=$(date +%s.%N)
log "step: dpkg-deb -x the image, headers, kbuild and source packages into $WORK/pkg"
for n in $(pkgs_for "$K"); do dpkg-deb -x "$(deb_of "$n" "$K")" "$WORK/pkg"; done
TARBALL="$WORK/pkg/usr/src/linux-source-6.12.tar.xz"
[ -f "$TARBALL" ] || die "no $TARBALL in linux-source-6.12"
log "step: extract $(basename "$TARBALL")"
tar -xJf "$TARBALL" -C "$WORK"
rm -f "$TARBALL"
SRC="$WORK/linux-source-6.12"
HDR="$WORK/pkg/usr/src/linux-headers-$KREL"
IMG="$WORK/pkg/lib/modules/$KREL"
[ -f "$HDR/.config" ] && [ -d "$IMG" ] || die "unexpected package layout ($HDR, $IMG)"
T_EX=$(secs_since "$T0")

# ---- patch and configure ----------------------------------------------------------------------------
for P in "${PATCHES[@]}"; do
  log "step: patch -p1 < $(basename "$P")"
  (cd "$SRC" && patch -p1 --forward --quiet < "$P") >&2 || die "$(basename "$P") does not apply to $K"
done
cp "$HDR/.config" "$HDR/Module.symvers" "$SRC/"
cp "$HDR/vmlinux" "$SRC/vmlinux"   # BTF base for the modules' .BTF (CONFIG_DEBUG_INFO_BTF_MODULES)
# Debian signs modules at install time with its own key (CONFIG_MODULE_SIG_ALL); we have no key and
# do not install: build unsigned modules (they load on a MODULE_SIG kernel without enforcement, tainted).
(cd "$SRC" && ./scripts/config --disable MODULE_SIG_ALL --set-str MODULE_SIG_KEY "" --set-str SYSTEM_TRUSTED_KEYS "")
# Debian's compiler and release string, as in the headers' Makefile (.kernelvariables): the vermagic
# and CONFIG_CC_VERSION_TEXT then match the distribution kernel.
MK=(make -C "$SRC" ARCH=x86 CROSS_COMPILE=x86_64-linux-gnu- CC=x86_64-linux-gnu-gcc-12 KERNELRELEASE="$KREL")
T0=$(date +%s.%N)
log "step: make olddefconfig && make modules_prepare (-j$JOBS)"
BLOG="$WORK/build.log"
{ "${MK[@]}" olddefconfig && "${MK[@]}" -j"$JOBS" modules_prepare; } >"$BLOG" 2>&1 || { tail -30 "$BLOG" >&2; die "modules_prepare failed (log $BLOG)"; }
[ "$(cat "$SRC/include/config/kernel.release")" = "$KREL" ] || die "kernel.release is $(cat "$SRC/include/config/kernel.release"), expected $KREL"
grep -q '^CONFIG_HAVE_KVM_USERFAULT=y' "$SRC/.config" || die "CONFIG_HAVE_KVM_USERFAULT not set after olddefconfig"
grep -q '^CONFIG_HAVE_KVM_MEMSLOT_RESIZE=y' "$SRC/.config" || die "CONFIG_HAVE_KVM_MEMSLOT_RESIZE not set after olddefconfig"
T_PREP=$(secs_since "$T0")

# ---- build ---------------------------------------------------------------------------------------------
T0=$(date +%s.%N)
log "step: make M=arch/x86/kvm modules -j$JOBS"
"${MK[@]}" -j"$JOBS" M=arch/x86/kvm modules >>"$BLOG" 2>&1 || { grep -E 'error|Error' "$BLOG" | head -20 >&2; die "module build failed (log $BLOG)"; }
T_BUILD=$(secs_since "$T0")
log "step: module build took ${T_BUILD}s (modules_prepare ${T_PREP}s, extract ${T_EX}s, downloads ${T_DL}s)"

# ---- assemble and verify the output -------------------------------------------------------------------
NEW="$MODS/.new-$KEY"; rm -rf "$NEW"; mkdir -p "$NEW/stock" "$NEW/patched"
log "step: collect vmlinuz, stock modules (decompressed) and patched modules into $OUT"
cp "$WORK/pkg/boot/vmlinuz-$KREL" "$NEW/vmlinuz"
# The stock modules KVM needs, and the socket-diag ones (inet_diag, tcp_diag:
# `ss -K`, with which the nested suite cuts connections) that the guest loads.
for m in virt/lib/irqbypass drivers/crypto/ccp/ccp arch/x86/kvm/kvm arch/x86/kvm/kvm-amd arch/x86/kvm/kvm-intel \
         net/ipv4/inet_diag net/ipv4/tcp_diag; do
  f="$IMG/kernel/$m.ko"
  if [ -f "$f.xz" ]; then xz -dc "$f.xz" > "$NEW/stock/$(basename "$m").ko"; else cp "$f" "$NEW/stock/"; fi
done
# Strip debug info as Debian does for its modules (INSTALL_MOD_STRIP); .BTF and .modinfo stay.
for m in kvm kvm-amd kvm-intel; do
  x86_64-linux-gnu-strip --strip-debug -o "$NEW/patched/$m.ko" "$SRC/arch/x86/kvm/$m.ko"
done
VERMAGIC=$(modinfo -F vermagic "$NEW/stock/kvm.ko")
[ -n "$VERMAGIC" ] || die "no vermagic in stock kvm.ko"
for f in "$NEW"/patched/*.ko; do
  v=$(modinfo -F vermagic "$f")
  [ "$v" = "$VERMAGIC" ] || die "vermagic mismatch: $(basename "$f") has '$v', stock kvm.ko has '$VERMAGIC'"
done
echo "$VERMAGIC" > "$NEW/vermagic"
echo "$KREL" > "$NEW/krel"
echo "$T_BUILD" > "$NEW/build-seconds"
{ echo "kernel=$K pinned=$KVER key=$KEY"; for n in $(pkgs_for "$K"); do basename "$(deb_of "$n" "$K")"; done
  x86_64-linux-gnu-gcc-12 --version | head -1; } > "$NEW/versions"
cp "$BLOG" "$NEW/build.log"
printf 'download %s\nextract %s\nmodules_prepare %s\nmodule_build %s\ntotal %s\n' \
  "$T_DL" "$T_EX" "$T_PREP" "$T_BUILD" "$(secs_since "$T_START")" > "$NEW/timings"
touch "$NEW/complete"
rm -rf "$OUT"; mv "$NEW" "$OUT"
[ "$K" != "$KVER" ] && echo "$OUT" > "$MODS/fallback-$(key_for "$KVER")"
if [ "${FERRY_KVM_KEEP_WORK:-0}" != 1 ]; then   # deleting ~80k files can take minutes on a busy disk:
  TRASH="$CACHE/userfault-work/.trash-$KEY-$$"    # do it in the background, detached from our stdout
  mv "$WORK" "$TRASH" && (setsid rm -rf "$TRASH" </dev/null >/dev/null 2>&1 &)
fi
log "done: vermagic '$VERMAGIC' verified on patched kvm, kvm-amd, kvm-intel; total $(secs_since "$T_START")s"
echo "$OUT"
