#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Boots Debian's pinned 6.12 kernel under QEMU (TCG, nested AMD SVM) and runs userfault_test on
# the PATCHED kvm/kvm-amd modules (npt=1, then npt=0 for shadow paging) and on the STOCK ones.
#
#   kernel/kvm-userfault/selftest/run-nested.sh [MODULES_DIR]
#
# MODULES_DIR: an output directory of ../build.sh (default: run ../build.sh, which is cached).
# env: QEMU (default qemu-system-x86_64), QEMU_TIMEOUT (s, default 900), UF_SHADOW=0 skips the npt=0 phase,
#      KEEP=1 keeps the scratch directory (initramfs, serial log).
# Prints the guest's result lines (and the serial log path); exits 0 when every check passed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODDIR="${1:-}"
[ -n "$MODDIR" ] || MODDIR=$("$HERE/../build.sh")
for f in vmlinuz krel stock/irqbypass.ko stock/ccp.ko stock/kvm.ko stock/kvm-amd.ko patched/kvm.ko patched/kvm-amd.ko; do
  [ -f "$MODDIR/$f" ] || { echo "run-nested: $MODDIR/$f missing" >&2; exit 1; }
done
QEMU="${QEMU:-qemu-system-x86_64}"
command -v "$QEMU" >/dev/null || { echo "run-nested: no $QEMU (Debian package qemu-system-x86)" >&2; exit 1; }
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx insmod || { echo "run-nested: needs busybox-static" >&2; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/kvmuf-selftest.XXXXXX")
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$W"; }
trap cleanup EXIT
R="$W/root"; mkdir -p "$R/bin" "$R/lib/modules/stock" "$R/lib/modules/patched"
gcc -O2 -static -Wall -o "$R/bin/userfault_test" "$HERE/userfault_test.c"
cp /bin/busybox "$R/bin/busybox"
install -m 755 "$HERE/init" "$R/init"
cp "$MODDIR"/stock/{irqbypass,ccp,kvm,kvm-amd}.ko "$R/lib/modules/stock/"
cp "$MODDIR"/patched/{kvm,kvm-amd}.ko "$R/lib/modules/patched/"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initramfs.cpio.gz"

LOG="$W/serial.log"
echo "run-nested: kernel $(cat "$MODDIR/krel"), modules $MODDIR, $("$QEMU" --version | head -1)" >&2
T0=$(date +%s)
set +e
timeout --kill-after=10 "${QEMU_TIMEOUT:-900}" "$QEMU" -nodefaults -no-user-config \
  -accel tcg,thread=single -M pc -cpu max -smp 2 -m 1G \
  -display none -vga none -serial stdio -no-reboot \
  -kernel "$MODDIR/vmlinuz" -initrd "$W/initramfs.cpio.gz" \
  -append "console=ttyS0 loglevel=4 panic=-1 uf.shadow=${UF_SHADOW:-1}" </dev/null > "$LOG" 2>&1
RC=$?
set -e
tr -d '\r' < "$LOG" | grep -E '^(UFTEST|=== UFTEST|PASS|FAIL|INFO|SUMMARY)' || true
echo "run-nested: qemu rc=$RC wall=$(( $(date +%s) - T0 ))s log=$LOG$([ "${KEEP:-0}" = 1 ] || echo ' (deleted; KEEP=1 keeps it)')" >&2
if [ "$RC" = 0 ] && tr -d '\r' < "$LOG" | grep -qx 'UFTEST RESULT ok'; then exit 0; fi
[ "${KEEP:-0}" = 1 ] || tail -40 "$LOG" >&2
exit 1
