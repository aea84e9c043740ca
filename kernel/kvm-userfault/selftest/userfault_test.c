// SPDX-License-Identifier: GPL-2.0
// userfault_test: checks Ferry's KVM patches against /dev/kvm: "KVM Userfault" (KVM_MEM_USERFAULT)
// and the in-place memslot resize (KVM_MEM_RESIZE_IN_PLACE).
//
//   userfault_test patched   expect the patches: capabilities 1, flags accepted, exits as specified
//   userfault_test stock     expect a stock kernel: capabilities 0, flags refused with EINVAL
//
// Built static (gcc -O2 -static -Wall) and run inside the nested test guest (see run-nested.sh).
// Prints one "PASS name" / "FAIL name" line per check, "INFO ..." lines, and a final
// "SUMMARY mode=... pass=N fail=M" line; exits 0 when nothing failed.
//
// The guest is a few lines of 16-bit real-mode code (assembled by gcc from the inline asm below)
// run with an "unreal" DS (base 0, limit 4 GiB), so addr32 accesses reach the whole slot.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

// ---- uAPI of the patch (and newer-than-Debian-12 uAPI), defined here once ----------------------
#define UF_CAP_USERFAULT 245                      // KVM_CAP_USERFAULT (Ferry's choice; see README)
#define UF_MEM_USERFAULT (1u << 3)                // KVM_MEM_USERFAULT
#define UF_EXIT_FLAG_USERFAULT (1ull << 4)        // KVM_MEMORY_EXIT_FLAG_USERFAULT
#define UF_EXIT_MEMORY_FAULT 39                   // KVM_EXIT_MEMORY_FAULT
#define UF_CAP_USER_MEMORY2 231
#define UF_CAP_MEMSLOT_RESIZE 1000        // KVM_CAP_MEMSLOT_RESIZE (Ferry's second patch)
#define UF_MEM_RESIZE_IN_PLACE (1u << 4)  // KVM_MEM_RESIZE_IN_PLACE: a request, not stored
#define UF_CAP_PRE_FAULT_MEMORY 236

struct uf_region2 {                               // struct kvm_userspace_memory_region2 + patch
  uint32_t slot, flags;
  uint64_t guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset;
  uint32_t guest_memfd, pad1;
  uint64_t userfault_bitmap;                      // was pad2[0]
  uint64_t pad2[13];
};
_Static_assert(sizeof(struct uf_region2) == 160, "kvm_userspace_memory_region2 is 160 bytes");
_Static_assert(offsetof(struct uf_region2, userfault_bitmap) == 48, "userfault_bitmap offset");
#define UF_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct uf_region2)

struct uf_memory_fault { uint64_t flags, gpa, size; };   // kvm_run.memory_fault (in the exit union)
struct uf_pre_fault { uint64_t gpa, size, flags, padding[5]; };
_Static_assert(sizeof(struct uf_pre_fault) == 64, "kvm_pre_fault_memory is 64 bytes");
#define UF_PRE_FAULT_MEMORY _IOWR(KVMIO, 0xd5, struct uf_pre_fault)

// ---- guest ----------------------------------------------------------------------------------
// Entry "main" (registers set by the host: ESI = page A, EDI = page B, EBX = page C):
//   read dword [A] -> out 0x11          (A's bit set: userfault exit, read)
//   write 0x5a5a5a5a to [B]; read [B] -> out 0x11   (B's bit set: userfault exit, write)
//   read [C] -> out 0x11                (C's bit clear: maps C)
//   out 0x12                            (host sets C's bit now)
//   read [C] -> out 0x11                (C is mapped: must NOT exit)
//   hlt
// Entry "read1": read [ESI] -> out 0x11; hlt
__asm__(
    ".pushsection .rodata\n"
    ".globl uf_guest_start, uf_guest_read1, uf_guest_end\n"
    "uf_guest_start:\n"
    ".code16\n"
    "  mov $0x11, %dx\n"
    "  addr32 mov (%esi), %eax\n"
    "  out %eax, %dx\n"
    "  mov $0x5a5a5a5a, %eax\n"
    "  addr32 mov %eax, (%edi)\n"
    "  addr32 mov (%edi), %eax\n"
    "  out %eax, %dx\n"
    "  addr32 mov (%ebx), %eax\n"
    "  out %eax, %dx\n"
    "  mov $0x12, %dx\n"
    "  out %al, %dx\n"
    "  mov $0x11, %dx\n"
    "  addr32 mov (%ebx), %eax\n"
    "  out %eax, %dx\n"
    "  hlt\n"
    "uf_guest_read1:\n"
    "  mov $0x11, %dx\n"
    "  addr32 mov (%esi), %eax\n"
    "  out %eax, %dx\n"
    "  hlt\n"
    ".code64\n"
    "uf_guest_end:\n"
    ".popsection\n");
extern const uint8_t uf_guest_start[], uf_guest_read1[], uf_guest_end[];

#define PAGE 4096ul
#define SLOT_SIZE (4ul << 20)      // 4 MiB at gpa 0 (2 MiB aligned)
#define NPAGES (SLOT_SIZE / PAGE)
#define CODE_GPA 0x1000ul
#define A_GPA 0x200000ul
#define B_GPA 0x201000ul
#define C_GPA 0x202000ul
#define D_GPA 0x203000ul
#define E_GPA 0x204000ul
#define F_GPA 0x205000ul

static int kvm_fd, run_size, npass, nfail;
static const char *phase = "init";

#define PASS(...) do { npass++; printf("PASS "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)
#define FAIL(...) do { nfail++; printf("FAIL "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)
#define INFO(...) do { printf("INFO "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)
#define CHECK(cond, ...) do { if (cond) PASS(__VA_ARGS__); else FAIL(__VA_ARGS__); } while (0)

static void on_alarm(int sig) {
  (void)sig;
  char buf[200];
  int n = snprintf(buf, sizeof buf, "FAIL watchdog: phase '%s' hung\nSUMMARY pass=%d fail=%d (watchdog)\n",
                   phase, npass, nfail + 1);
  if (write(1, buf, n) < 0) {}
  _exit(2);
}

// ---- bitmap (one bit per 4 KiB page, little-endian unsigned longs) ------------------------------
static uint64_t *bitmap;  // NPAGES bits
static void bit_set(uint64_t gpa) {
  uint64_t i = gpa / PAGE;
  __atomic_fetch_or(&bitmap[i / 64], 1ull << (i % 64), __ATOMIC_RELEASE);
}
static void bit_clear(uint64_t gpa) {  // after installing the page: release store, no ioctl
  uint64_t i = gpa / PAGE;
  __atomic_fetch_and(&bitmap[i / 64], ~(1ull << (i % 64)), __ATOMIC_RELEASE);
}

// ---- VM plumbing ------------------------------------------------------------------------------
struct vm { int fd, vcpu; struct kvm_run *run; uint8_t *mem; };

static int set_region2(int vmfd, uint32_t flags, uint8_t *mem, uint64_t bm) {
  struct uf_region2 r;
  memset(&r, 0, sizeof r);
  r.slot = 0; r.flags = flags; r.guest_phys_addr = 0; r.memory_size = SLOT_SIZE;
  r.userspace_addr = (uint64_t)(uintptr_t)mem; r.userfault_bitmap = bm;
  return ioctl(vmfd, UF_SET_USER_MEMORY_REGION2, &r);
}

static int vm_set_entry(struct vm *v, const uint8_t *entry) {
  struct kvm_sregs s;
  if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0) { perror("KVM_GET_SREGS"); return -1; }
  s.cs.base = 0; s.cs.selector = 0;
  struct kvm_segment *segs[] = { &s.ds, &s.es, &s.ss, &s.fs, &s.gs };
  for (int i = 0; i < 5; i++) { segs[i]->base = 0; segs[i]->selector = 0; }
  s.ds.limit = 0xffffffff; s.ds.g = 1;   // unreal DS
  if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) { perror("KVM_SET_SREGS"); return -1; }
  struct kvm_regs r; memset(&r, 0, sizeof r);
  r.rip = CODE_GPA + (entry - uf_guest_start); r.rflags = 2;
  r.rsi = A_GPA; r.rdi = B_GPA; r.rbx = C_GPA;
  if (ioctl(v->vcpu, KVM_SET_REGS, &r) < 0) { perror("KVM_SET_REGS"); return -1; }
  return 0;
}

// Backing memory: anonymous, 4 KiB pages, guest code installed at CODE_GPA.
static uint8_t *new_memory(void) {
  uint8_t *m = mmap(NULL, SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) { perror("mmap"); exit(2); }
  madvise(m, SLOT_SIZE, MADV_NOHUGEPAGE);
  memcpy(m + CODE_GPA, uf_guest_start, uf_guest_end - uf_guest_start);
  return m;
}

static int vm_create(struct vm *v) {
  memset(v, 0, sizeof *v); v->fd = v->vcpu = -1;
  v->fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  if (v->fd < 0) { perror("KVM_CREATE_VM"); return -1; }
  return 0;
}

static int vm_add_vcpu(struct vm *v) {
  v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0);
  if (v->vcpu < 0) { perror("KVM_CREATE_VCPU"); return -1; }
  v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
  if (v->run == MAP_FAILED) { perror("mmap kvm_run"); v->run = NULL; return -1; }
  return 0;
}

static void vm_destroy(struct vm *v) {
  if (v->run) munmap(v->run, run_size);
  if (v->vcpu >= 0) close(v->vcpu);
  if (v->fd >= 0) close(v->fd);
  memset(v, 0, sizeof *v); v->fd = v->vcpu = -1;
}

// One KVM_RUN to the next event the test cares about.
enum ev_type { EV_ERROR, EV_USERFAULT, EV_OUT11, EV_OUT12, EV_HLT, EV_OTHER };
struct ev { enum ev_type type; int err; uint32_t exit_reason; uint64_t val; struct uf_memory_fault mf; };

static struct ev run_once(struct vm *v) {
  struct ev e; memset(&e, 0, sizeof e);
  for (;;) {
    int rc = ioctl(v->vcpu, KVM_RUN, 0);
    int err = errno;
    struct kvm_run *r = v->run;
    e.exit_reason = r->exit_reason;
    if (rc < 0) {
      if (err == EINTR || err == EAGAIN) continue;
      e.err = err;
      memcpy(&e.mf, &r->mmio, sizeof e.mf);   // the exit union starts here
      e.type = (err == EFAULT && r->exit_reason == UF_EXIT_MEMORY_FAULT) ? EV_USERFAULT : EV_ERROR;
      return e;
    }
    if (r->exit_reason == KVM_EXIT_IO && r->io.direction == KVM_EXIT_IO_OUT) {
      uint8_t *d = (uint8_t *)r + r->io.data_offset;
      if (r->io.port == 0x11 && r->io.size == 4) { uint32_t x; memcpy(&x, d, 4); e.val = x; e.type = EV_OUT11; return e; }
      if (r->io.port == 0x12) { e.type = EV_OUT12; return e; }
    }
    if (r->exit_reason == KVM_EXIT_HLT) { e.type = EV_HLT; return e; }
    e.type = EV_OTHER;
    return e;
  }
}

static const char *ev_name(const struct ev *e) {
  static char buf[160];
  switch (e->type) {
  case EV_USERFAULT: snprintf(buf, sizeof buf, "memory_fault(flags=0x%llx gpa=0x%llx size=%llu)",
                              (unsigned long long)e->mf.flags, (unsigned long long)e->mf.gpa,
                              (unsigned long long)e->mf.size); break;
  case EV_OUT11: snprintf(buf, sizeof buf, "out11(0x%llx)", (unsigned long long)e->val); break;
  case EV_OUT12: snprintf(buf, sizeof buf, "out12"); break;
  case EV_HLT: snprintf(buf, sizeof buf, "hlt"); break;
  case EV_ERROR: snprintf(buf, sizeof buf, "KVM_RUN error %s (exit_reason=%u)", strerror(e->err), e->exit_reason); break;
  default: snprintf(buf, sizeof buf, "exit_reason=%u", e->exit_reason); break;
  }
  return buf;
}

static int is_userfault_at(const struct ev *e, uint64_t gpa) {
  return e->type == EV_USERFAULT && e->err == EFAULT && e->exit_reason == UF_EXIT_MEMORY_FAULT &&
         (e->mf.flags & UF_EXIT_FLAG_USERFAULT) && e->mf.gpa == gpa && e->mf.size == PAGE;
}

static void fill_page(uint8_t *mem, uint64_t gpa, uint32_t tag) {
  uint32_t buf[PAGE / 4];
  for (unsigned i = 0; i < PAGE / 4; i++) buf[i] = tag + i;
  memcpy(mem + gpa, buf, PAGE);   // "install" the page (a real VMM would receive it from the source)
}

// ---- stage-2 mappings, from the VM's binary stats (pages_4k + 512 * pages_2m)
// --------------------
#ifndef KVM_GET_STATS_FD
#define KVM_GET_STATS_FD _IO(KVMIO, 0xce)
#endif
static long mapped_pages(int vmfd) {
  int fd = ioctl(vmfd, KVM_GET_STATS_FD, NULL);
  if (fd < 0) return -1;
  struct {
    uint32_t flags, name_size, num_desc, id_offset, desc_offset, data_offset;
  } h;
  long total = -1;
  if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) goto out;
  size_t dsz =
      16 +
      h.name_size;  // struct kvm_stats_desc: flags, exponent, size, offset, bucket_size, name[]
  char *desc = malloc(dsz * h.num_desc);
  if (!desc || pread(fd, desc, dsz * h.num_desc, h.desc_offset) != (ssize_t)(dsz * h.num_desc)) {
    free(desc);
    goto out;
  }
  total = 0;
  for (uint32_t i = 0; i < h.num_desc; i++) {
    const char *d = desc + i * dsz;
    uint32_t off;
    memcpy(&off, d + 8, 4);
    long mult = !strcmp(d + 16, "pages_4k") ? 1 : !strcmp(d + 16, "pages_2m") ? 512 : 0;
    if (!mult) continue;
    uint64_t v;
    if (pread(fd, &v, 8, h.data_offset + off) != 8) {
      total = -1;
      break;
    }
    total += mult * (long)v;
  }
  free(desc);
out:
  close(fd);
  return total;
}

static int set_region2_at(int vmfd, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
                          uint8_t *hva) {
  struct uf_region2 r;
  memset(&r, 0, sizeof r);
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = (uint64_t)(uintptr_t)hva;
  return ioctl(vmfd, UF_SET_USER_MEMORY_REGION2, &r);
}

// ---- checks ---------------------------------------------------------------------------------
static void check_validation(int expect_patch) {
  struct vm v;
  phase = "validation";
  if (vm_create(&v)) { FAIL("validation: KVM_CREATE_VM"); return; }
  uint8_t *mem = new_memory();
  int rc;

  rc = set_region2(v.fd, UF_MEM_USERFAULT, mem, 0);
  CHECK(rc < 0 && errno == EINVAL, "reject_null_bitmap (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  rc = set_region2(v.fd, UF_MEM_USERFAULT, mem, (uint64_t)(uintptr_t)bitmap + 4);
  CHECK(rc < 0 && errno == EINVAL, "reject_misaligned_bitmap (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  struct kvm_userspace_memory_region r1 = { .slot = 0, .flags = UF_MEM_USERFAULT, .guest_phys_addr = 0,
                                            .memory_size = SLOT_SIZE, .userspace_addr = (uint64_t)(uintptr_t)mem };
  rc = ioctl(v.fd, KVM_SET_USER_MEMORY_REGION, &r1);
  CHECK(rc < 0 && errno == EINVAL, "reject_old_ioctl (KVM_SET_USER_MEMORY_REGION + flag: rc=%d errno=%s)", rc,
        rc < 0 ? strerror(errno) : "-");
  rc = set_region2(v.fd, UF_MEM_USERFAULT, mem, (uint64_t)(uintptr_t)bitmap);
  if (expect_patch)
    CHECK(rc == 0, "accept_valid_bitmap (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  else
    CHECK(rc < 0 && errno == EINVAL, "stock_flag_refused (valid bitmap: rc=%d errno=%s)", rc,
          rc < 0 ? strerror(errno) : "-");
  vm_destroy(&v);
  munmap(mem, SLOT_SIZE);
}

static void check_faults(void) {
  struct vm v;
  struct ev e;
  phase = "faults";
  memset(bitmap, 0, NPAGES / 8);
  bit_set(A_GPA); bit_set(B_GPA);
  uint8_t *mem = new_memory();
  // C is installed before the guest runs. (Were it left untouched, the guest's read would map the
  // shared zero page, and the host's later write would COW it: the mmu_notifier invalidation then
  // zaps the stage-2 mapping and the next access consults the bitmap again.)
  fill_page(mem, C_GPA, 0xc0000000);
  if (vm_create(&v) || set_region2(v.fd, UF_MEM_USERFAULT, mem, (uint64_t)(uintptr_t)bitmap) ||
      vm_add_vcpu(&v) || vm_set_entry(&v, uf_guest_start)) { FAIL("faults: VM setup (%s)", strerror(errno)); goto out; }

  // Read of A: exit, twice while the bit stays set.
  e = run_once(&v);
  CHECK(is_userfault_at(&e, A_GPA), "read_fault_exits (KVM_RUN -1/EFAULT, exit 39, USERFAULT, gpa=A, 4096: got %s)", ev_name(&e));
  e = run_once(&v);
  CHECK(is_userfault_at(&e, A_GPA), "bit_still_set_exits_again (got %s)", ev_name(&e));
  fill_page(mem, A_GPA, 0xa0000000);
  bit_clear(A_GPA);
  e = run_once(&v);
  CHECK(e.type == EV_OUT11 && e.val == 0xa0000000, "read_sees_installed_data (got %s)", ev_name(&e));

  // Write to B: exit, install, clear, the write lands on the installed page.
  e = run_once(&v);
  CHECK(is_userfault_at(&e, B_GPA), "write_fault_exits (gpa=B: got %s)", ev_name(&e));
  fill_page(mem, B_GPA, 0xb0000000);
  bit_clear(B_GPA);
  e = run_once(&v);
  uint32_t b0, b1;
  memcpy(&b0, mem + B_GPA, 4); memcpy(&b1, mem + B_GPA + 4, 4);
  CHECK(e.type == EV_OUT11 && e.val == 0x5a5a5a5a && b0 == 0x5a5a5a5a && b1 == 0xb0000001,
        "write_after_install (guest=%s host[0]=0x%x host[1]=0x%x)", ev_name(&e), b0, b1);

  // C: mapped by a first read (bit clear); setting its bit afterwards does not unmap it.
  e = run_once(&v);
  CHECK(e.type == EV_OUT11 && e.val == 0xc0000000, "clear_bit_no_exit (read C: got %s)", ev_name(&e));
  e = run_once(&v);
  if (e.type != EV_OUT12) { FAIL("guest sequence (expected out12, got %s)", ev_name(&e)); goto out; }
  memcpy(mem + C_GPA, "\x11\x22\x33\x44", 4);   // same page, so the guest sees it through the mapping
  bit_set(C_GPA);
  e = run_once(&v);
  CHECK(e.type == EV_OUT11 && e.val == 0x44332211, "mapped_page_stays_mapped (bit set after mapping: got %s)", ev_name(&e));
  e = run_once(&v);
  CHECK(e.type == EV_HLT, "guest_reaches_hlt (got %s)", ev_name(&e));
out:
  vm_destroy(&v);
  munmap(mem, SLOT_SIZE);
}

// KVM_PRE_FAULT_MEMORY: a page whose bit is set fails (EFAULT) without hanging; a clear one maps.
static void check_prefault(void) {
  struct vm v;
  phase = "prefault";
  if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, UF_CAP_PRE_FAULT_MEMORY) <= 0) { INFO("SKIP prefault: no KVM_CAP_PRE_FAULT_MEMORY"); return; }
  memset(bitmap, 0, NPAGES / 8);
  bit_set(E_GPA);
  uint8_t *mem = new_memory();
  if (vm_create(&v) || set_region2(v.fd, UF_MEM_USERFAULT, mem, (uint64_t)(uintptr_t)bitmap) ||
      vm_add_vcpu(&v) || vm_set_entry(&v, uf_guest_start)) { FAIL("prefault: VM setup (%s)", strerror(errno)); goto out; }
  struct uf_pre_fault pf = { .gpa = E_GPA, .size = PAGE };
  int rc = ioctl(v.vcpu, UF_PRE_FAULT_MEMORY, &pf);
  int err = errno;
  CHECK(rc < 0 && err == EFAULT, "prefault_set_bit_efault (rc=%d errno=%s left=%llu)", rc, rc < 0 ? strerror(err) : "-",
        (unsigned long long)pf.size);
  struct uf_pre_fault pf2 = { .gpa = F_GPA, .size = PAGE };
  rc = ioctl(v.vcpu, UF_PRE_FAULT_MEMORY, &pf2);
  CHECK(rc == 0 && pf2.size == 0, "prefault_clear_bit_ok (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  // A pre-faulted page is mapped: setting its bit afterwards does not make the guest exit.
  bit_set(F_GPA);
  struct kvm_regs r;
  ioctl(v.vcpu, KVM_GET_REGS, &r);
  vm_set_entry(&v, uf_guest_read1);
  ioctl(v.vcpu, KVM_GET_REGS, &r); r.rsi = F_GPA; ioctl(v.vcpu, KVM_SET_REGS, &r);
  struct ev e = run_once(&v);
  CHECK(e.type == EV_OUT11, "prefaulted_page_no_exit (got %s)", ev_name(&e));
out:
  vm_destroy(&v);
  munmap(mem, SLOT_SIZE);
}

// Turning the flag on for a slot with mappings (KVM_MR_FLAGS_ONLY) zaps them; turning it off is allowed.
static void check_flags_only(void) {
  struct vm v;
  struct ev e;
  struct kvm_regs r;
  phase = "flags_only";
  memset(bitmap, 0, NPAGES / 8);
  uint8_t *mem = new_memory();
  memcpy(mem + D_GPA, "\xd0\xd1\xd2\xd3", 4);
  if (vm_create(&v) || set_region2(v.fd, 0, mem, 0) || vm_add_vcpu(&v) || vm_set_entry(&v, uf_guest_read1)) {
    FAIL("flags_only: VM setup (%s)", strerror(errno)); goto out;
  }
  ioctl(v.vcpu, KVM_GET_REGS, &r); r.rsi = D_GPA; ioctl(v.vcpu, KVM_SET_REGS, &r);
  e = run_once(&v);
  if (e.type != EV_OUT11) { FAIL("flags_only: first read of D without the flag (got %s)", ev_name(&e)); goto out; }
  bit_set(D_GPA);
  int rc = set_region2(v.fd, UF_MEM_USERFAULT, mem, (uint64_t)(uintptr_t)bitmap);
  CHECK(rc == 0, "enable_flag_on_live_slot (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  vm_set_entry(&v, uf_guest_read1);
  ioctl(v.vcpu, KVM_GET_REGS, &r); r.rsi = D_GPA; ioctl(v.vcpu, KVM_SET_REGS, &r);
  e = run_once(&v);
  CHECK(is_userfault_at(&e, D_GPA), "enable_zaps_existing_mappings (got %s)", ev_name(&e));
  rc = set_region2(v.fd, 0, mem, 0);
  CHECK(rc == 0, "disable_flag (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  e = run_once(&v);   // bit still set, flag off: no exit
  CHECK(e.type == EV_OUT11 && e.val == 0xd3d2d1d0, "flag_off_ignores_bitmap (got %s)", ev_name(&e));
out:
  vm_destroy(&v);
  munmap(mem, SLOT_SIZE);
}

// Runs read1 on `gpa`. An MMIO exit (no slot there) is completed (the read
// returns zeros) and the guest run to its hlt, so the vCPU can be reused.
static struct ev read_at(struct vm *v, uint64_t gpa) {
  struct kvm_regs r;
  vm_set_entry(v, uf_guest_read1);
  ioctl(v->vcpu, KVM_GET_REGS, &r);
  r.rsi = gpa;
  ioctl(v->vcpu, KVM_SET_REGS, &r);
  struct ev e = run_once(v);
  if (e.type == EV_OTHER && e.exit_reason == KVM_EXIT_MMIO) {
    memset(v->run->mmio.data, 0, sizeof v->run->mmio.data);
    struct ev rest = run_once(v);  // completes the read, then out 0x11
    if (rest.type == EV_OUT11) rest = run_once(v);
    if (rest.type != EV_HLT)
      FAIL("resize: after an MMIO read the guest did not reach hlt (got %s)", ev_name(&rest));
  } else if (e.type == EV_OUT11) {
    struct ev rest = run_once(v);
    if (rest.type != EV_HLT) FAIL("resize: the guest did not reach hlt (got %s)", ev_name(&rest));
  }
  return e;
}

// KVM_MEM_RESIZE_IN_PLACE: a slot of the lower 2 MiB grows to 4 MiB and shrinks back, keeping the
// stage-2 mapping of a page that stays; the shrunk tail is unreachable again (MMIO), never read
// through a stale mapping; the refusals.  Stock: the capability is 0 and the flag is EINVAL.
static void check_resize(int expect_patch) {
  struct vm v;
  struct ev e;
  const uint64_t half = SLOT_SIZE / 2, low_gpa = 0x100000;
  phase = "resize";
  int cap = ioctl(kvm_fd, KVM_CHECK_EXTENSION, UF_CAP_MEMSLOT_RESIZE);
  uint8_t *mem = new_memory();
  uint8_t *other = new_memory();
  fill_page(mem, low_gpa, 0x10000000);
  fill_page(mem, A_GPA, 0xa0000000);
  if (vm_create(&v) || set_region2_at(v.fd, 0, 0, 0, half, mem) || vm_add_vcpu(&v)) {
    FAIL("resize: VM setup (%s)", strerror(errno));
    goto out;
  }
  if (!expect_patch) {
    CHECK(cap == 0, "stock_cap_memslot_resize_absent (%d)", cap);
    int rc = set_region2_at(v.fd, 0, UF_MEM_RESIZE_IN_PLACE, 0, SLOT_SIZE, mem);
    CHECK(rc < 0 && errno == EINVAL, "stock_resize_refused (rc=%d errno=%s)", rc,
          rc < 0 ? strerror(errno) : "-");
    goto out;
  }
  CHECK(cap == 1, "cap_memslot_resize_present (%d)", cap);
  e = read_at(&v, low_gpa);
  if (e.type != EV_OUT11 || e.val != 0x10000000) {
    FAIL("resize: read inside the slot (got %s)", ev_name(&e));
    goto out;
  }
  e = read_at(&v, A_GPA);
  CHECK(e.type == EV_OTHER && e.exit_reason == KVM_EXIT_MMIO,
        "outside_the_slot_is_mmio (gpa=A: got %s)", ev_name(&e));
  long before = mapped_pages(v.fd);
  int rc = set_region2_at(v.fd, 0, UF_MEM_RESIZE_IN_PLACE, 0, SLOT_SIZE, mem);
  CHECK(rc == 0, "grow_in_place (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  long after = mapped_pages(v.fd);
  CHECK(before > 0 && after == before, "grow_keeps_the_stage2_mappings (mapped pages %ld -> %ld)",
        before, after);
  e = read_at(&v, A_GPA);
  CHECK(e.type == EV_OUT11 && e.val == 0xa0000000, "grown_pages_are_guest_memory (gpa=A: got %s)",
        ev_name(&e));
  before = mapped_pages(v.fd);
  rc = set_region2_at(v.fd, 0, UF_MEM_RESIZE_IN_PLACE, 0, half, mem);
  CHECK(rc == 0, "shrink_in_place (rc=%d errno=%s)", rc, rc < 0 ? strerror(errno) : "-");
  after = mapped_pages(v.fd);
  CHECK(after < before && after > 0, "shrink_zaps_only_the_tail (mapped pages %ld -> %ld)", before,
        after);
  e = read_at(&v, A_GPA);
  CHECK(e.type == EV_OTHER && e.exit_reason == KVM_EXIT_MMIO,
        "shrunk_tail_is_not_reachable (gpa=A: got %s)", ev_name(&e));
  before = mapped_pages(v.fd);
  e = read_at(&v, low_gpa);
  after = mapped_pages(v.fd);
  CHECK(e.type == EV_OUT11 && e.val == 0x10000000 && after == before,
        "kept_page_needs_no_fault_after_shrink (got %s; mapped pages %ld -> %ld)", ev_name(&e),
        before, after);
  // Refusals: another gpa or host address, a grow into another slot, a slot under dirty logging.
  rc = set_region2_at(v.fd, 0, UF_MEM_RESIZE_IN_PLACE, 0x1000000, SLOT_SIZE, mem);
  CHECK(rc < 0 && errno == EINVAL, "refuse_another_gpa (rc=%d errno=%s)", rc,
        rc < 0 ? strerror(errno) : "-");
  rc = set_region2_at(v.fd, 0, UF_MEM_RESIZE_IN_PLACE, 0, SLOT_SIZE, other);
  CHECK(rc < 0 && errno == EINVAL, "refuse_another_host_address (rc=%d errno=%s)", rc,
        rc < 0 ? strerror(errno) : "-");
  rc = set_region2_at(v.fd, 1, UF_MEM_RESIZE_IN_PLACE, half, half, other);
  CHECK(rc < 0 && errno == EINVAL, "refuse_a_slot_that_does_not_exist (rc=%d errno=%s)", rc,
        rc < 0 ? strerror(errno) : "-");
  if (set_region2_at(v.fd, 1, 0, half + 0x100000, 0x100000, other) == 0) {
    rc = set_region2_at(v.fd, 0, UF_MEM_RESIZE_IN_PLACE, 0, SLOT_SIZE, mem);
    CHECK(rc < 0 && errno == EEXIST, "refuse_a_grow_into_another_slot (rc=%d errno=%s)", rc,
          rc < 0 ? strerror(errno) : "-");
  } else {
    FAIL("resize: second slot (%s)", strerror(errno));
  }
  if (set_region2_at(v.fd, 0, KVM_MEM_LOG_DIRTY_PAGES, 0, half, mem) == 0) {
    rc =
        set_region2_at(v.fd, 0, KVM_MEM_LOG_DIRTY_PAGES | UF_MEM_RESIZE_IN_PLACE, 0, 0x100000, mem);
    CHECK(rc < 0 && errno == EINVAL, "refuse_a_dirty_logged_slot (rc=%d errno=%s)", rc,
          rc < 0 ? strerror(errno) : "-");
  } else {
    FAIL("resize: dirty logging on (%s)", strerror(errno));
  }
out:
  vm_destroy(&v);
  munmap(mem, SLOT_SIZE);
  munmap(other, SLOT_SIZE);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "patched";
  int expect_patch = strcmp(mode, "stock") != 0;
  signal(SIGALRM, on_alarm);
  alarm(300);
  setvbuf(stdout, NULL, _IOLBF, 0);

  kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm_fd < 0) { perror("/dev/kvm"); printf("FAIL open_dev_kvm\nSUMMARY mode=%s pass=0 fail=1\n", mode); return 1; }
  run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  bitmap = aligned_alloc(64, NPAGES / 8);
  memset(bitmap, 0, NPAGES / 8);
  INFO("mode=%s guest code %zu bytes; KVM_CAP_USER_MEMORY2=%d KVM_CAP_PRE_FAULT_MEMORY=%d", mode,
       (size_t)(uf_guest_end - uf_guest_start), ioctl(kvm_fd, KVM_CHECK_EXTENSION, UF_CAP_USER_MEMORY2),
       ioctl(kvm_fd, KVM_CHECK_EXTENSION, UF_CAP_PRE_FAULT_MEMORY));

  int cap_sys = ioctl(kvm_fd, KVM_CHECK_EXTENSION, UF_CAP_USERFAULT);
  int vmfd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  int cap_vm = vmfd >= 0 ? ioctl(vmfd, KVM_CHECK_EXTENSION, UF_CAP_USERFAULT) : -1;
  if (vmfd >= 0) close(vmfd);
  if (expect_patch)
    CHECK(cap_sys == 1 && cap_vm == 1, "cap_userfault_present (system=%d vm=%d)", cap_sys, cap_vm);
  else
    CHECK(cap_sys == 0 && cap_vm == 0, "stock_cap_userfault_absent (system=%d vm=%d)", cap_sys, cap_vm);

  check_validation(expect_patch);
  check_resize(expect_patch);
  if (expect_patch) {
    check_faults();
    check_prefault();
    check_flags_only();
  }
  printf("SUMMARY mode=%s pass=%d fail=%d\n", mode, npass, nfail);
  return nfail ? 1 : 0;
}
