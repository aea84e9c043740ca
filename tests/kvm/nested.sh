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

# The guest kernel and its KVM modules, cached.
fetch_kernel() {
  mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/debs"
  echo "deb http://deb.debian.org/debian bookworm-backports main" > "$CACHE/apt/sources.list"
  local apto=(-o Dir::Etc::SourceList="$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
              -o Dir::State::Lists="$CACHE/apt/lists" -o Dir::Cache="$CACHE/apt/cache"
              -o Dir::State::status=/var/lib/dpkg/status)
  local deb
  deb=$(ls "$CACHE"/debs/linux-image-6.12.*-amd64_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    say "fetching the guest kernel (bookworm-backports 6.12) under a private apt state"
    apt-get "${apto[@]}" update >/dev/null
    local pkg
    pkg=$(apt-cache "${apto[@]}" depends linux-image-amd64 | awk '/Depends: linux-image-6\.12/{print $2; exit}')
    [ -n "$pkg" ] || { say "bookworm-backports has no linux-image-6.12"; exit 1; }
    (cd "$CACHE/debs" && apt-get "${apto[@]}" download "$pkg" >/dev/null 2>&1)
    deb=$(ls "$CACHE"/debs/"$pkg"_*.deb | head -1)
  fi
  if [ ! -d "$CACHE/kernel/boot" ] || [ "$CACHE/kernel/boot" -ot "$deb" ]; then
    rm -rf "$CACHE/kernel"
    dpkg-deb -x "$deb" "$CACHE/kernel"
  fi
  KREL=$(ls "$CACHE/kernel/lib/modules" | head -1)
  VMLINUZ="$CACHE/kernel/boot/vmlinuz-$KREL"
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
  for m in virt/lib/irqbypass drivers/crypto/ccp/ccp arch/x86/kvm/kvm arch/x86/kvm/kvm-amd; do
    local f="$CACHE/kernel/lib/modules/$KREL/kernel/$m.ko"
    if [ -f "$f.xz" ]; then xz -dc "$f.xz" > "$INITRD_ROOT/lib/modules/$(basename "$m").ko"
    else cp "$f" "$INITRD_ROOT/lib/modules/"; fi
  done
  local bb=bazel-bin
  add_binary "$bb/migration/agent/ferryd" "$INITRD_ROOT/ferry/ferryd"
  add_binary "$bb/migration/cli/ferry" "$INITRD_ROOT/ferry/ferry"
  add_binary "$bb/tests/vmm/kvm/kvm_backend_test" "$INITRD_ROOT/ferry/kvm_backend_test"
  add_binary "$bb/tests/e2e/kvm_e2e_test" "$INITRD_ROOT/ferry/kvm_e2e_test"
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
