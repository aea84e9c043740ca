#!/usr/bin/env bash
# Ferry's nested KVM environment: real KVM inside a QEMU guest under
# software emulation (TCG, AMD SVM with nested paging), for machines
# without /dev/kvm. docs/kvm.md ("The nested test environment").
#
#   tests/kvm/nested.sh test [--timeout S] [--filter GTEST_FILTER]
#                                            run the KVM tests inside the guest;
#                                            last line "kvm: N passed, N failed, N skipped"
#   tests/kvm/nested.sh demo [ARGS]          run `ferry demo --backend kvm ARGS` inside it
#                                            (--memory 64M unless ARGS say otherwise)
#   tests/kvm/nested.sh bench [ARGS]         run `ferry-bench ARGS` inside it (patched
#                                            KVM modules: exit mode on KVM)
#
# Needs the Bazel outputs (./dev builds them first). The guest kernel is
# bookworm-backports' 6.12, fetched with `apt-get download` under a private
# apt state in the cache directory and unpacked with dpkg-deb -x: the
# machine's apt sources and installed packages are never changed. Cache:
# $FERRY_KVM_CACHE, default /var/cache/ferry/kvm-guest.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${FERRY_KVM_CACHE:-/var/cache/ferry/kvm-guest}
mode=${1:-test}
[ $# -gt 0 ] && shift
TIMEOUT=1500
FILTER='*'
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --filter) FILTER=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

say() { printf 'test-kvm: %s\n' "$*" >&2; }

# The guest kernel, its stock KVM modules and the same modules built with
# Ferry's KVM patch (kernel/kvm-userfault/build.sh: one pinned 6.12 version
# from Debian's bookworm-security for the image, headers, kbuild and
# source; fetched under a private apt state and cached by the hash of the
# patch and the version). The guest runs the suite on the stock modules
# (blocking mode), then swaps in the patched ones (exit mode).
fetch_kernel() {
  say "the guest kernel and KVM modules (stock and patched): kernel/kvm-userfault/build.sh"
  MODS=$(FERRY_KVM_CACHE="$CACHE" kernel/kvm-userfault/build.sh)
  [ -f "$MODS/vmlinuz" ] && [ -f "$MODS/patched/kvm.ko" ] || { say "no modules in '$MODS'"; exit 1; }
  KREL=$(cat "$MODS/krel")
  VMLINUZ="$MODS/vmlinuz"
}

# Copies a binary and the shared libraries it needs (by absolute path).
add_binary() {
  local bin=$1 dest=$2
  install -D -m 755 "$bin" "$dest"
  ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
    [ -e "$INITRD_ROOT$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$INITRD_ROOT$lib"
  done
}

build_initramfs() {
  INITRD_ROOT=$(mktemp -d)
  mkdir -p "$INITRD_ROOT"/{bin,dev,proc,sys,tmp,lib/modules,ferry}
  cp /bin/busybox "$INITRD_ROOT/bin/busybox"
  mkdir -p "$INITRD_ROOT"/lib/modules/{stock,patched}
  cp "$MODS"/stock/*.ko "$INITRD_ROOT/lib/modules/stock/"
  cp "$MODS"/patched/*.ko "$INITRD_ROOT/lib/modules/patched/"
  # ss -K (the recovery test's cut; the socket-diag modules are in stock/).
  add_binary /usr/bin/ss "$INITRD_ROOT/bin/ss"
  # The patch's own selftest (kernel/kvm-userfault/selftest), static.
  gcc -O2 -static -Wall -o "$INITRD_ROOT/ferry/userfault_test" \
    kernel/kvm-userfault/selftest/userfault_test.c
  local bb=bazel-bin
  add_binary "$bb/migration/agent/ferryd" "$INITRD_ROOT/ferry/ferryd"
  # ferryd --state-dir finds it beside itself.
  add_binary "$bb/migration/agent/ferry-vmm" "$INITRD_ROOT/ferry/ferry-vmm"
  add_binary "$bb/migration/cli/ferry" "$INITRD_ROOT/ferry/ferry"
  add_binary "$bb/bench/ferry-bench" "$INITRD_ROOT/ferry/ferry-bench"
  add_binary "$bb/tests/vmm/kvm/kvm_backend_test" "$INITRD_ROOT/ferry/kvm_backend_test"
  add_binary "$bb/tests/e2e/kvm_e2e_test" "$INITRD_ROOT/ferry/kvm_e2e_test"
  # Users for ferryd --vmm-user nobody (KvmVmmProcessTest): glibc reads
  # them with its built-in files backend.
  mkdir -p "$INITRD_ROOT/etc"
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    > "$INITRD_ROOT/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$INITRD_ROOT/etc/group"
  printf 'passwd: files\ngroup: files\n' > "$INITRD_ROOT/etc/nsswitch.conf"
  install -m 755 tests/kvm/init "$INITRD_ROOT/init"
  printf '%s\n' "${ARGS[@]+"${ARGS[@]}"}" > "$INITRD_ROOT/ferry/demo_args"
  INITRD=$(mktemp --suffix=.cpio.gz)
  (cd "$INITRD_ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD"
  rm -rf "$INITRD_ROOT"
}

boot() {
  local qemu=/usr/bin/qemu-system-x86_64
  local log=$1
  say "booting $KREL under QEMU TCG (nested SVM); serial log: $log"
  set +e
  timeout --kill-after=10 "$TIMEOUT" "$qemu" -nodefaults -no-user-config -accel tcg,thread=single \
    -M pc -cpu max -m 3G -smp 2 -display none -vga none -serial stdio -no-reboot \
    -kernel "$VMLINUZ" -initrd "$INITRD" \
    -append "console=ttyS0 loglevel=3 panic=-1 ferry.mode=$mode ferry.filter=$FILTER" \
    </dev/null >"$log" 2>&1
  local rc=$?
  set -e
  rm -f "$INITRD"
  return $rc
}

# The demo's VM: 64 MiB unless asked (KVM under TCG is about 100x slower
# than hardware).
if [ "$mode" = demo ] && ! printf '%s\n' "${ARGS[@]+"${ARGS[@]}"}" | grep -q '^--memory'; then
  ARGS=(--memory 64M "${ARGS[@]+"${ARGS[@]}"}")
fi
fetch_kernel
build_initramfs
LOG=$(mktemp --suffix=-ferry-kvm.log)
rc=0
boot "$LOG" || rc=$?
if [ "$mode" = bench ]; then
  sed -n '/^FERRY-BENCH-BEGIN/,/^FERRY-BENCH-END/p' "$LOG" | grep -v '^FERRY-BENCH-'
  grep -q '^FERRY-BENCH-END rc=0' "$LOG" || { say "the benchmark failed (QEMU rc $rc); log: $LOG"; exit 1; }
  exit 0
fi
if [ "$mode" = demo ]; then
  sed -n '/^FERRY-DEMO-BEGIN/,/^FERRY-DEMO-END/p' "$LOG" | grep -v '^FERRY-DEMO-'
  grep -q '^FERRY-DEMO-END rc=0' "$LOG" || { say "the demo failed (QEMU rc $rc); log: $LOG"; exit 1; }
  exit 0
fi
# Every test binary's output, then the counts.
sed -n '/^FERRY-TEST-BEGIN/,/^FERRY-TEST-ALL-DONE/p' "$LOG" | grep -vE '^FERRY-' >&2 || true
python3 tools/count_gtest_log.py "$LOG" --label kvm || {
  [ $rc -eq 0 ] || say "QEMU exited with $rc (124: the ${TIMEOUT} s timeout); log: $LOG"
  exit 1
}
