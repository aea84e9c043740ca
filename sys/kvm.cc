#include "sys/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/errno_status.h"
#include "sys/kvm_abi.h"

namespace ferry::sys {
namespace {

// ioctl, retried on EINTR where the call is idempotent.
int Ioctl(int fd, unsigned long request, void* arg) {
  int rc;
  do {
    rc = ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

// struct kvm_msrs with one entry, in C's layout (kvm_abi.h).
struct OneMsr {
  abi::KvmMsrsHeader head{};
  kvm_msr_entry entry{};
};
static_assert(sizeof(OneMsr) == sizeof(abi::KvmMsrsHeader) + sizeof(kvm_msr_entry));

int CheckExtension(int fd, int cap) {
  const int rc = ioctl(fd, KVM_CHECK_EXTENSION, cap);
  return rc < 0 ? 0 : rc;
}

// Reads a variable-length list ioctl (a header with a count, then the
// entries), growing the buffer while the kernel says E2BIG.
template <typename Header, typename Entry>
absl::StatusOr<std::vector<Entry>> ReadList(int fd, unsigned long request, const char* name,
                                            uint32_t Header::*count, uint32_t first,
                                            uint32_t max) {
  for (uint32_t n = first; n <= max; n *= 2) {
    std::vector<uint8_t> buf(sizeof(Header) + n * sizeof(Entry));
    auto* head = reinterpret_cast<Header*>(buf.data());
    head->*count = n;
    if (ioctl(fd, request, buf.data()) == 0) {
      std::vector<Entry> out(head->*count);
      std::memcpy(out.data(), buf.data() + sizeof(Header), out.size() * sizeof(Entry));
      return out;
    }
    if (errno != E2BIG) return ErrnoStatus(name, errno);
  }
  return absl::ResourceExhaustedError(absl::StrCat(name, ": more than ", max, " entries"));
}

// Whether this kernel carries Ferry's KVM patch: a scratch VM reports
// KVM_CAP_USERFAULT and accepts a one-page memslot with KVM_MEM_USERFAULT
// and a bitmap. Both must hold: the capability number is not upstream's
// (kvm_abi.h), and a stock kernel refuses the unknown flag with EINVAL.
bool ProbeUserfault(int kvm_fd) {
  UniqueFd vm(ioctl(kvm_fd, KVM_CREATE_VM, 0));
  if (!vm.valid() || CheckExtension(vm.get(), abi::kKvmCapUserfault) <= 0) return false;
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return false;
  alignas(8) uint64_t bitmap = 1;
  abi::KvmUserspaceMemoryRegion2 r{};
  r.slot = 0;
  r.flags = abi::kKvmMemUserfault;
  r.guest_phys_addr = 0;
  r.memory_size = 4096;
  r.userspace_addr = reinterpret_cast<uint64_t>(page);
  r.userfault_bitmap = reinterpret_cast<uint64_t>(&bitmap);
  const bool accepted = ioctl(vm.get(), abi::kKvmSetUserMemoryRegion2, &r) == 0;
  vm.Reset();  // the slot (and its bitmap pointer) go with the VM
  munmap(page, 4096);
  return accepted;
}

// Whether this kernel carries Ferry's in-place memslot resize: a scratch
// VM's two-page slot is shrunk to one page with KVM_MEM_RESIZE_IN_PLACE.
// A stock kernel refuses the unknown flag with EINVAL.
bool ProbeMemslotResize(int kvm_fd) {
  UniqueFd vm(ioctl(kvm_fd, KVM_CREATE_VM, 0));
  if (!vm.valid() || CheckExtension(vm.get(), abi::kKvmCapMemslotResize) <= 0) return false;
  void* pages = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pages == MAP_FAILED) return false;
  abi::KvmUserspaceMemoryRegion2 r{};
  r.slot = 0;
  r.guest_phys_addr = 0;
  r.memory_size = 8192;
  r.userspace_addr = reinterpret_cast<uint64_t>(pages);
  bool accepted = ioctl(vm.get(), abi::kKvmSetUserMemoryRegion2, &r) == 0;
  if (accepted) {
    r.flags = abi::kKvmMemResizeInPlace;
    r.memory_size = 4096;
    accepted = ioctl(vm.get(), abi::kKvmSetUserMemoryRegion2, &r) == 0;
  }
  vm.Reset();
  munmap(pages, 8192);
  return accepted;
}

}  // namespace

size_t KvmXsaveBytes(int xsave2_size) {
  return std::max<size_t>(sizeof(abi::KvmXsave), xsave2_size > 0 ? xsave2_size : 0);
}

std::string KvmCapabilities::ToString() const {
  std::vector<std::string> on;
  on.push_back(absl::StrCat("api ", api_version));
  if (user_memory2) on.push_back("user-memory2");
  if (memory_fault_info) on.push_back("memory-fault-info");
  if (pre_fault_memory) on.push_back("pre-fault-memory");
  if (manual_dirty_log_protect) on.push_back("manual-dirty-log-protect");
  if (dirty_log_ring_bytes > 0) on.push_back(absl::StrCat("dirty-ring(", dirty_log_ring_bytes, ")"));
  if (guest_memfd) on.push_back("guest-memfd");
  if (xsave2) on.push_back("xsave2");
  if (immediate_exit) on.push_back("immediate-exit");
  on.push_back(exit_on_missing ? "exit-on-missing memslots (KVM userfault)"
                               : "no exit-on-missing memslots");
  on.push_back(memslot_resize ? "in-place memslot resize" : "no in-place memslot resize");
  return absl::StrJoin(on, ", ");
}

namespace {
constexpr char kKvmDevice[] = "/dev/kvm";
// The device held by Kvm::HoldDevice; -1: none.
std::atomic<int> held_kvm{-1};
}  // namespace

absl::Status Kvm::HoldDevice() {
  if (held_kvm.load() >= 0) return absl::OkStatus();
  const int fd = open(kKvmDevice, O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", kKvmDevice), errno);
  int expected = -1;
  if (!held_kvm.compare_exchange_strong(expected, fd)) close(fd);
  return absl::OkStatus();
}

absl::StatusOr<Kvm> Kvm::Open(const char* path) {
  const int held = held_kvm.load();
  UniqueFd fd(held >= 0 && std::strcmp(path, kKvmDevice) == 0 ? fcntl(held, F_DUPFD_CLOEXEC, 0)
                                                              : open(path, O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path), errno);
  KvmCapabilities caps;
  caps.api_version = ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (caps.api_version != KVM_API_VERSION)
    return absl::FailedPreconditionError(absl::StrCat(
        "KVM_GET_API_VERSION is ", caps.api_version, ", Ferry speaks ", KVM_API_VERSION));
  caps.user_memory2 = CheckExtension(fd.get(), abi::kKvmCapUserMemory2) > 0;
  caps.memory_fault_info = CheckExtension(fd.get(), abi::kKvmCapMemoryFaultInfo) > 0;
  caps.pre_fault_memory = CheckExtension(fd.get(), abi::kKvmCapPreFaultMemory) > 0;
  caps.manual_dirty_log_protect =
      (CheckExtension(fd.get(), KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) &
       KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) != 0;
  caps.dirty_log_ring_bytes = CheckExtension(fd.get(), KVM_CAP_DIRTY_LOG_RING);
  caps.guest_memfd = CheckExtension(fd.get(), abi::kKvmCapGuestMemfd) > 0;
  const int xsave2 = CheckExtension(fd.get(), KVM_CAP_XSAVE2);
  caps.xsave2 = xsave2 > 0;
  caps.immediate_exit = CheckExtension(fd.get(), KVM_CAP_IMMEDIATE_EXIT) > 0;
  caps.exit_on_missing = caps.user_memory2 && caps.memory_fault_info && ProbeUserfault(fd.get());
  caps.memslot_resize = caps.user_memory2 && ProbeMemslotResize(fd.get());
  if (!caps.immediate_exit)
    return absl::FailedPreconditionError(
        "KVM lacks KVM_CAP_IMMEDIATE_EXIT (Linux 4.11): vCPUs could not be paused");
  const int mmap_size = ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size < static_cast<int>(sizeof(kvm_run)))
    return ErrnoStatus("KVM_GET_VCPU_MMAP_SIZE", errno);
  return Kvm(std::move(fd), caps, mmap_size, xsave2);
}

absl::StatusOr<KvmVmFd> Kvm::CreateVm() const {
  int vm;
  do {
    vm = ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (vm < 0 && errno == EINTR);
  if (vm < 0) return ErrnoStatus("KVM_CREATE_VM", errno);
  return KvmVmFd(UniqueFd(vm));
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::SupportedCpuid() const {
  return ReadList<abi::KvmCpuid2Header, kvm_cpuid_entry2>(
      fd_.get(), abi::kKvmGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID",
      &abi::KvmCpuid2Header::nent, 128, 4096);
}

absl::StatusOr<std::vector<uint32_t>> Kvm::MsrIndexList() const {
  return ReadList<abi::KvmMsrListHeader, uint32_t>(fd_.get(), abi::kKvmGetMsrIndexList,
                                                   "KVM_GET_MSR_INDEX_LIST",
                                                   &abi::KvmMsrListHeader::nmsrs, 256, 16384);
}

absl::Status KvmVmFd::SetMemoryRegion(uint32_t slot, uint32_t flags, uint64_t gpa,
                                      uint64_t size, void* host) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (Ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) != 0)
    return ErrnoStatus(absl::StrCat("KVM_SET_USER_MEMORY_REGION slot ", slot), errno);
  return absl::OkStatus();
}

absl::Status KvmVmFd::SetMemoryRegion2(uint32_t slot, uint32_t flags, uint64_t gpa,
                                       uint64_t size, void* host,
                                       const void* userfault_bitmap) {
  abi::KvmUserspaceMemoryRegion2 r{};
  r.slot = slot;
  r.flags = flags | (userfault_bitmap != nullptr ? abi::kKvmMemUserfault : 0);
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  r.userfault_bitmap = reinterpret_cast<uint64_t>(userfault_bitmap);
  if (Ioctl(fd_.get(), abi::kKvmSetUserMemoryRegion2, &r) != 0)
    return ErrnoStatus(absl::StrCat("KVM_SET_USER_MEMORY_REGION2 slot ", slot), errno);
  return absl::OkStatus();
}

absl::Status KvmVmFd::ResizeMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  abi::KvmUserspaceMemoryRegion2 r{};
  r.slot = slot;
  r.flags = abi::kKvmMemResizeInPlace;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (Ioctl(fd_.get(), abi::kKvmSetUserMemoryRegion2, &r) != 0)
    return ErrnoStatus(absl::StrCat("KVM_SET_USER_MEMORY_REGION2 (resize in place) slot ", slot),
                       errno);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> KvmVmFd::StageTwoMappedPages() const {
  UniqueFd stats(ioctl(fd_.get(), KVM_GET_STATS_FD, nullptr));
  if (!stats.valid()) return ErrnoStatus("KVM_GET_STATS_FD", errno);
  kvm_stats_header h{};
  if (pread(stats.get(), &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
    return absl::UnavailableError("KVM stats: no header");
  // Bounded before use: a descriptor is the struct plus its name.
  if (h.name_size == 0 || h.name_size > 256 || h.num_desc > 4096)
    return absl::UnavailableError("KVM stats: implausible header");
  // A descriptor (struct kvm_stats_desc) is 16 bytes (flags, exponent,
  // size, offset at byte 8, bucket_size), then the name. Read by offset:
  // in C++ the header's flexible-array wrapper moves `name` (17, not 16).
  constexpr size_t kDescFixedBytes = 16, kDescOffsetAt = 8;
  const size_t desc_bytes = kDescFixedBytes + h.name_size;
  std::vector<char> descs(desc_bytes * h.num_desc);
  if (pread(stats.get(), descs.data(), descs.size(), h.desc_offset) !=
      static_cast<ssize_t>(descs.size()))
    return absl::UnavailableError("KVM stats: short descriptors");
  uint64_t pages = 0;
  bool found = false;
  for (uint32_t i = 0; i < h.num_desc; ++i) {
    const char* d = descs.data() + i * desc_bytes;
    const std::string name(d + kDescFixedBytes, strnlen(d + kDescFixedBytes, h.name_size));
    uint32_t offset;
    std::memcpy(&offset, d + kDescOffsetAt, sizeof offset);
    const uint64_t scale = name == "pages_4k"   ? 1
                           : name == "pages_2m" ? 512
                           : name == "pages_1g" ? 262144
                                                : 0;
    if (scale == 0) continue;
    uint64_t v = 0;
    if (pread(stats.get(), &v, sizeof v, h.data_offset + offset) != sizeof v)
      return absl::UnavailableError("KVM stats: short data");
    pages += scale * v;
    found = true;
  }
  if (!found) return absl::UnavailableError("KVM stats: no pages_4k (not x86?)");
  return pages;
}

int KvmVmFd::CheckExtension(int cap) const { return sys::CheckExtension(fd_.get(), cap); }

absl::Status KvmVmFd::EnableCap(uint32_t cap, uint64_t arg0) {
  kvm_enable_cap c{};
  c.cap = cap;
  c.args[0] = arg0;
  if (Ioctl(fd_.get(), KVM_ENABLE_CAP, &c) != 0)
    return ErrnoStatus(absl::StrCat("KVM_ENABLE_CAP ", cap), errno);
  return absl::OkStatus();
}

absl::Status KvmVmFd::GetDirtyLog(uint32_t slot, uint64_t* bitmap) {
  kvm_dirty_log d{};
  d.slot = slot;
  d.dirty_bitmap = bitmap;
  if (Ioctl(fd_.get(), KVM_GET_DIRTY_LOG, &d) != 0)
    return ErrnoStatus("KVM_GET_DIRTY_LOG", errno);
  return absl::OkStatus();
}

absl::Status KvmVmFd::ClearDirtyLog(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                                    uint64_t* bitmap) {
  kvm_clear_dirty_log c{};
  c.slot = slot;
  c.first_page = first_page;
  c.num_pages = num_pages;
  c.dirty_bitmap = bitmap;
  if (Ioctl(fd_.get(), KVM_CLEAR_DIRTY_LOG, &c) != 0)
    return ErrnoStatus("KVM_CLEAR_DIRTY_LOG", errno);
  return absl::OkStatus();
}

absl::StatusOr<KvmVcpuFd> KvmVmFd::CreateVcpu(int id, int mmap_size) {
  int fd;
  do {
    fd = ioctl(fd_.get(), KVM_CREATE_VCPU, id);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(absl::StrCat("KVM_CREATE_VCPU ", id), errno);
  UniqueFd vcpu(fd);
  void* run = mmap(nullptr, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.get(), 0);
  if (run == MAP_FAILED) return ErrnoStatus("mmap kvm_run", errno);
  return KvmVcpuFd(std::move(vcpu), static_cast<kvm_run*>(run), mmap_size);
}

KvmVcpuFd::KvmVcpuFd(KvmVcpuFd&& o) noexcept
    : fd_(std::move(o.fd_)),
      run_(std::exchange(o.run_, nullptr)),
      mmap_size_(o.mmap_size_),
      ring_(std::exchange(o.ring_, nullptr)),
      ring_bytes_(o.ring_bytes_) {}

KvmVcpuFd& KvmVcpuFd::operator=(KvmVcpuFd&& o) noexcept {
  if (this != &o) {
    if (run_ != nullptr) munmap(run_, mmap_size_);
    if (ring_ != nullptr) munmap(ring_, ring_bytes_);
    fd_ = std::move(o.fd_);
    run_ = std::exchange(o.run_, nullptr);
    mmap_size_ = o.mmap_size_;
    ring_ = std::exchange(o.ring_, nullptr);
    ring_bytes_ = o.ring_bytes_;
  }
  return *this;
}

KvmVcpuFd::~KvmVcpuFd() {
  if (run_ != nullptr) munmap(run_, mmap_size_);
  if (ring_ != nullptr) munmap(ring_, ring_bytes_);
}

absl::StatusOr<kvm_dirty_gfn*> KvmVcpuFd::MapDirtyRing(size_t bytes) {
  if (ring_ != nullptr) return absl::FailedPreconditionError("the dirty ring is mapped already");
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(),
                 KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));
  if (p == MAP_FAILED) return ErrnoStatus("mmap dirty ring", errno);
  ring_ = p;
  ring_bytes_ = bytes;
  return static_cast<kvm_dirty_gfn*>(p);
}

absl::StatusOr<int> KvmVmFd::ResetDirtyRings() {
  const int n = ioctl(fd_.get(), KVM_RESET_DIRTY_RINGS, 0);
  if (n < 0) return ErrnoStatus("KVM_RESET_DIRTY_RINGS", errno);
  return n;
}

absl::Status KvmVcpuFd::Run() {
  if (ioctl(fd_.get(), KVM_RUN, 0) == 0) return absl::OkStatus();
  if (errno == EINTR) return absl::CancelledError("KVM_RUN interrupted");
  // A memory-fault exit: KVM returns EFAULT with the exit filled in.
  if (errno == EFAULT && run_ != nullptr && run_->exit_reason == abi::kKvmExitMemoryFault)
    return absl::OkStatus();
  return ErrnoStatus("KVM_RUN", errno);
}

absl::Status KvmVcpuFd::GetRegs(kvm_regs* regs) {
  if (Ioctl(fd_.get(), KVM_GET_REGS, regs) != 0) return ErrnoStatus("KVM_GET_REGS", errno);
  return absl::OkStatus();
}
absl::Status KvmVcpuFd::SetRegs(const kvm_regs& regs) {
  kvm_regs r = regs;
  if (Ioctl(fd_.get(), KVM_SET_REGS, &r) != 0) return ErrnoStatus("KVM_SET_REGS", errno);
  return absl::OkStatus();
}
absl::Status KvmVcpuFd::GetSregs(kvm_sregs* sregs) {
  if (Ioctl(fd_.get(), KVM_GET_SREGS, sregs) != 0) return ErrnoStatus("KVM_GET_SREGS", errno);
  return absl::OkStatus();
}
absl::Status KvmVcpuFd::SetSregs(const kvm_sregs& sregs) {
  kvm_sregs s = sregs;
  if (Ioctl(fd_.get(), KVM_SET_SREGS, &s) != 0) return ErrnoStatus("KVM_SET_SREGS", errno);
  return absl::OkStatus();
}

absl::StatusOr<std::string> KvmVcpuFd::GetXsave(int xsave2_size) {
  std::string buf(KvmXsaveBytes(xsave2_size), '\0');
  const unsigned long request = xsave2_size > 0 ? abi::kKvmGetXsave2 : abi::kKvmGetXsave;
  if (Ioctl(fd_.get(), request, buf.data()) != 0)
    return ErrnoStatus(xsave2_size > 0 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE", errno);
  return buf;
}

absl::Status KvmVcpuFd::SetXsave(const std::string& xsave, int xsave2_size) {
  const size_t size = KvmXsaveBytes(xsave2_size);
  if (xsave.size() != size)
    return absl::InvalidArgumentError(absl::StrCat(
        "XSAVE state of ", xsave.size(), " bytes; this host's KVM takes ", size));
  std::string buf = xsave;
  if (Ioctl(fd_.get(), abi::kKvmSetXsave, buf.data()) != 0)
    return ErrnoStatus("KVM_SET_XSAVE", errno);
  return absl::OkStatus();
}

absl::Status KvmVcpuFd::GetXcrs(kvm_xcrs* xcrs) {
  if (Ioctl(fd_.get(), KVM_GET_XCRS, xcrs) != 0) return ErrnoStatus("KVM_GET_XCRS", errno);
  return absl::OkStatus();
}
absl::Status KvmVcpuFd::SetXcrs(const kvm_xcrs& xcrs) {
  kvm_xcrs x = xcrs;
  if (Ioctl(fd_.get(), KVM_SET_XCRS, &x) != 0) return ErrnoStatus("KVM_SET_XCRS", errno);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<uint32_t, uint64_t>>> KvmVcpuFd::GetMsrs(
    const std::vector<uint32_t>& indices) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  // One at a time: KVM_GET_MSRS stops at the first MSR it refuses.
  for (uint32_t index : indices) {
    OneMsr m;
    m.head.nmsrs = 1;
    m.entry.index = index;
    const int n = Ioctl(fd_.get(), abi::kKvmGetMsrs, &m);
    if (n < 0) return ErrnoStatus("KVM_GET_MSRS", errno);
    if (n == 1) out.emplace_back(index, m.entry.data);
  }
  return out;
}

absl::Status KvmVcpuFd::SetMsrs(const std::vector<std::pair<uint32_t, uint64_t>>& msrs) {
  for (const auto& [index, value] : msrs) {
    OneMsr m;
    m.head.nmsrs = 1;
    m.entry.index = index;
    m.entry.data = value;
    const int n = Ioctl(fd_.get(), abi::kKvmSetMsrs, &m);
    if (n < 0) return ErrnoStatus("KVM_SET_MSRS", errno);
    if (n != 1)
      return absl::InvalidArgumentError(absl::StrCat("KVM_SET_MSRS refused MSR ", absl::Hex(index),
                                                     " = ", absl::Hex(value)));
  }
  return absl::OkStatus();
}

absl::Status KvmVcpuFd::GetMpState(uint32_t* state) {
  kvm_mp_state s{};
  if (Ioctl(fd_.get(), KVM_GET_MP_STATE, &s) != 0) return ErrnoStatus("KVM_GET_MP_STATE", errno);
  *state = s.mp_state;
  return absl::OkStatus();
}
absl::Status KvmVcpuFd::SetMpState(uint32_t state) {
  kvm_mp_state s{};
  s.mp_state = state;
  if (Ioctl(fd_.get(), KVM_SET_MP_STATE, &s) != 0) return ErrnoStatus("KVM_SET_MP_STATE", errno);
  return absl::OkStatus();
}

absl::Status KvmVcpuFd::SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf(sizeof(abi::KvmCpuid2Header) + entries.size() * sizeof(kvm_cpuid_entry2));
  reinterpret_cast<abi::KvmCpuid2Header*>(buf.data())->nent = entries.size();
  std::memcpy(buf.data() + sizeof(abi::KvmCpuid2Header), entries.data(),
              entries.size() * sizeof(kvm_cpuid_entry2));
  if (Ioctl(fd_.get(), abi::kKvmSetCpuid2, buf.data()) != 0)
    return ErrnoStatus("KVM_SET_CPUID2", errno);
  return absl::OkStatus();
}

absl::Status KvmVcpuFd::PreFaultMemory(uint64_t gpa, uint64_t size) {
  abi::KvmPreFaultMemory r{};
  r.gpa = gpa;
  r.size = size;
  while (r.size > 0) {
    const uint64_t before = r.size;
    if (ioctl(fd_.get(), abi::kKvmPreFaultMemory, &r) != 0) {
      if (errno == EINTR || errno == EAGAIN) continue;  // r says how far it got
      return ErrnoStatus("KVM_PRE_FAULT_MEMORY", errno);
    }
    if (r.size == before)
      return absl::InternalError("KVM_PRE_FAULT_MEMORY made no progress");
  }
  return absl::OkStatus();
}

}  // namespace ferry::sys
