#include "base/sandbox.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "base/errno_status.h"
#include "base/status_macros.h"

namespace ferry {
namespace {

// Capabilities the kernel can have: 0..63 (two 32-bit capset words).
constexpr int kMaxCapabilities = 64;

constexpr const char* kCapabilityNames[] = {
    "CAP_CHOWN",           "CAP_DAC_OVERRIDE",   "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",          "CAP_FSETID",         "CAP_KILL",
    "CAP_SETGID",          "CAP_SETUID",         "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",       "CAP_NET_RAW",        "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",       "CAP_SYS_MODULE",     "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",     "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",       "CAP_SYS_BOOT",       "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",       "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",           "CAP_LEASE",          "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",        "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",       "CAP_SYSLOG",         "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ",     "CAP_PERFMON",
    "CAP_BPF",             "CAP_CHECKPOINT_RESTORE",
};

std::string CapabilityName(int cap) {
  if (cap >= 0 && cap < static_cast<int>(std::size(kCapabilityNames)))
    return kCapabilityNames[cap];
  return absl::StrCat("capability ", cap);
}

// Whether the running kernel knows capability `cap` (PR_CAPBSET_READ fails
// with EINVAL past /proc/sys/kernel/cap_last_cap; no /proc needed).
bool KernelHasCapability(int cap) {
  return ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0;
}

absl::Status Capget(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  if (::syscall(SYS_capget, &header, data) != 0) return ErrnoStatus("capget", errno);
  return absl::OkStatus();
}

// Clears the ambient set. Kernels before 4.3 have none (EINVAL): nothing to
// clear.
absl::Status ClearAmbient() {
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return ErrnoStatus("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", errno);
  return absl::OkStatus();
}

// Removes every capability from the bounding set; each drop needs
// CAP_SETPCAP in the effective set.
absl::Status DropBoundingSet() {
  for (int cap = 0; cap < kMaxCapabilities && KernelHasCapability(cap); ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      int err = errno;
      return absl::Status(
          ErrnoStatus("prctl(PR_CAPBSET_DROP)", err).code(),
          absl::StrCat("dropping ", CapabilityName(cap),
                       " from the bounding set: ", strerror(err), " (errno ", ErrnoName(err),
                       "); it needs CAP_SETPCAP, which the process no longer holds"));
    }
  }
  return absl::OkStatus();
}

bool HoldsEffective(int cap) {
  __user_cap_data_struct data[2] = {};
  if (!Capget(data).ok()) return false;
  return (data[cap / 32].effective >> (cap % 32)) & 1;
}

// The process's thread count from /proc/self/status; nullopt when /proc is
// not there to say.
std::optional<int> ThreadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "Threads:")) continue;
    int n = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &n)) return n;
  }
  return std::nullopt;
}

struct SeccompContextDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using SeccompContext = std::unique_ptr<void, SeccompContextDeleter>;

// libseccomp returns -errno (with SCMP_FLTATR_API_SYSRAWRC, the kernel's own).
absl::Status SeccompStatus(absl::string_view call, int rc) {
  return ErrnoStatus(absl::StrCat("libseccomp ", call), -rc);
}

}  // namespace

absl::Status SetNoNewPrivs() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return ErrnoStatus("prctl(PR_SET_NO_NEW_PRIVS)", errno);
  return absl::OkStatus();
}

absl::StatusOr<bool> NoNewPrivs() {
  int v = ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
  if (v < 0) return ErrnoStatus("prctl(PR_GET_NO_NEW_PRIVS)", errno);
  return v == 1;
}

absl::StatusOr<CapabilitySets> ReadCapabilities() {
  __user_cap_data_struct data[2] = {};
  RETURN_IF_ERROR(Capget(data));
  CapabilitySets sets;
  sets.effective = data[0].effective | (uint64_t{data[1].effective} << 32);
  sets.permitted = data[0].permitted | (uint64_t{data[1].permitted} << 32);
  sets.inheritable = data[0].inheritable | (uint64_t{data[1].inheritable} << 32);
  for (int cap = 0; cap < kMaxCapabilities && KernelHasCapability(cap); ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) sets.bounding |= uint64_t{1} << cap;
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1)
      sets.ambient |= uint64_t{1} << cap;
  }
  return sets;
}

absl::Status WithoutEffectiveCapabilities(const std::function<absl::Status()>& f) {
  __user_cap_data_struct saved[2] = {};
  RETURN_IF_ERROR(Capget(saved));
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct cleared[2] = {saved[0], saved[1]};
  cleared[0].effective = cleared[1].effective = 0;
  if (::syscall(SYS_capset, &header, cleared) != 0) return ErrnoStatus("capset", errno);
  const absl::Status result = f();
  if (::syscall(SYS_capset, &header, saved) != 0) return ErrnoStatus("capset (restore)", errno);
  return result;
}

absl::Status DropCapabilities() {
  if (std::optional<int> threads = ThreadCount(); threads.has_value() && *threads > 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "DropCapabilities: the process has ", *threads,
        " threads; capabilities belong to each thread, so drop them before starting any"));
  }
  RETURN_IF_ERROR(ClearAmbient());
  RETURN_IF_ERROR(DropBoundingSet());
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[2] = {};  // every set empty
  if (::syscall(SYS_capset, &header, data) != 0) return ErrnoStatus("capset", errno);
  ASSIGN_OR_RETURN(CapabilitySets left, ReadCapabilities());
  if (!left.empty()) {
    return absl::InternalError(absl::StrFormat(
        "DropCapabilities: capabilities left after capset: effective %#x permitted %#x "
        "inheritable %#x bounding %#x ambient %#x",
        left.effective, left.permitted, left.inheritable, left.bounding, left.ambient));
  }
  return absl::OkStatus();
}

absl::Status SwitchUser(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  // The bounding set can only be emptied while CAP_SETPCAP is held, which a
  // switch away from uid 0 takes away.
  if (HoldsEffective(CAP_SETPCAP)) RETURN_IF_ERROR(DropBoundingSet());
  RETURN_IF_ERROR(ClearAmbient());
  // glibc applies each of these to every thread of the process.
  if (::setgroups(groups.size(), groups.data()) != 0)
    return ErrnoStatus(absl::StrCat("setgroups(", absl::StrJoin(groups, ","), ")"), errno);
  if (::setresgid(gid, gid, gid) != 0)
    return ErrnoStatus(absl::StrCat("setresgid(", gid, ")"), errno);
  if (::setresuid(uid, uid, uid) != 0)
    return ErrnoStatus(absl::StrCat("setresuid(", uid, ")"), errno);
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  if (::getresuid(&ruid, &euid, &suid) != 0) return ErrnoStatus("getresuid", errno);
  if (::getresgid(&rgid, &egid, &sgid) != 0) return ErrnoStatus("getresgid", errno);
  if (ruid != uid || euid != uid || suid != uid || rgid != gid || egid != gid || sgid != gid) {
    return absl::InternalError(absl::StrCat("SwitchUser(", uid, ", ", gid, "): ids read back as uid ",
                                            ruid, "/", euid, "/", suid, " gid ", rgid, "/", egid,
                                            "/", sgid));
  }
  return absl::OkStatus();
}

void SeccompPolicy::Allow(std::initializer_list<const char*> names) {
  for (const char* name : names) rules.push_back(SeccompRule{name});
}

std::vector<std::string> SeccompPolicy::SyscallNames() const {
  std::vector<std::string> names;
  for (const SeccompRule& r : rules) names.push_back(r.syscall);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

absl::Status InstallSeccompFilter(const SeccompPolicy& policy) {
  const uint32_t refuse = SCMP_ACT_ERRNO(EPERM);
  const uint32_t default_action =
      policy.default_action == SeccompPolicy::Default::kLog ? SCMP_ACT_LOG : refuse;
  if (default_action == SCMP_ACT_LOG && seccomp_api_get() < 3) {
    return absl::UnimplementedError(
        "seccomp: the log action needs libseccomp API level 3 (kernel 4.14)");
  }
  SeccompContext ctx(seccomp_init(default_action));
  if (ctx == nullptr) return absl::ResourceExhaustedError("seccomp_init failed");
  struct Attr {
    scmp_filter_attr attr;
    uint32_t value;
    const char* name;
  };
  const Attr attrs[] = {
      {SCMP_FLTATR_API_SYSRAWRC, 1, "SYSRAWRC"},
      // Another architecture's ABI (int 0x80, where enabled) is refused like
      // any call outside the list, not killed.
      {SCMP_FLTATR_ACT_BADARCH, refuse, "ACT_BADARCH"},
      {SCMP_FLTATR_CTL_NNP, 1, "CTL_NNP"},
      {SCMP_FLTATR_CTL_TSYNC, 1, "CTL_TSYNC"},
      {SCMP_FLTATR_CTL_LOG, policy.log_refused ? 1u : 0u, "CTL_LOG"},
  };
  for (const Attr& a : attrs) {
    if (int rc = seccomp_attr_set(ctx.get(), a.attr, a.value); rc != 0)
      return SeccompStatus(absl::StrCat("seccomp_attr_set(", a.name, ")"), rc);
  }
  for (const SeccompRule& rule : policy.rules) {
    int nr = seccomp_syscall_resolve_name(rule.syscall.c_str());
    if (nr == __NR_SCMP_ERROR) {
      return absl::InvalidArgumentError(absl::StrCat(
          "seccomp: libseccomp ", SCMP_VER_MAJOR, ".", SCMP_VER_MINOR,
          " knows no system call named \"", rule.syscall, "\""));
    }
    const uint32_t action = rule.errno_value == 0 ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(rule.errno_value);
    // libseccomp refuses a rule whose action is the default's; it is
    // redundant anyway.
    if (action == default_action) continue;
    std::vector<scmp_arg_cmp> cmps;
    for (const SeccompRule::ArgMatch& m : rule.when) {
      const uint64_t value = m.self_pid ? static_cast<uint64_t>(::getpid()) : m.value;
      if (m.op == SeccompRule::ArgMatch::Op::kMaskedEq) {
        cmps.push_back(SCMP_CMP64(m.index, SCMP_CMP_MASKED_EQ, m.mask, value));
      } else {
        cmps.push_back(SCMP_CMP64(m.index, SCMP_CMP_NE, value));
      }
    }
    if (int rc = seccomp_rule_add_array(ctx.get(), action, nr, cmps.size(), cmps.data());
        rc != 0) {
      return SeccompStatus(absl::StrCat("seccomp_rule_add(", rule.syscall, ")"), rc);
    }
  }
  if (int rc = seccomp_load(ctx.get()); rc != 0) {
    // With TSYNC, libseccomp reports a thread it could not synchronise (one
    // that runs another filter) as ESRCH.
    if (rc == -ESRCH) {
      return absl::FailedPreconditionError(
          "seccomp_load: a thread of the process runs a different seccomp filter");
    }
    return SeccompStatus("seccomp_load", rc);
  }
  return absl::OkStatus();
}

namespace {

using ArgMatch = SeccompRule::ArgMatch;

// The argument, read as a 32-bit int by the kernel, equals `v`.
ArgMatch Arg32Is(unsigned index, uint64_t v) {
  return {index, ArgMatch::Op::kMaskedEq, 0xffffffffu, v & 0xffffffffu};
}

ArgMatch ArgIsOwnPid(unsigned index) {
  return {index, ArgMatch::Op::kMaskedEq, 0xffffffffu, 0, /*self_pid=*/true};
}

SeccompRule Rule(const char* name, std::vector<ArgMatch> when) {
  SeccompRule r{name};
  r.when = std::move(when);
  return r;
}

// Rules that allow `name` when its 32-bit argument `index` is anything but
// the `excluded` values. libseccomp takes one comparison per argument and
// rule, and has no 32-bit "not equal", so the allowed values are written as
// a union of masked-equality patterns: walk the bits from the top, and where
// no excluded value shares the prefix so far, allow the whole prefix. The
// upper 32 bits must be 0 (a caller cannot hide an excluded value behind high
// bits the kernel drops), or all 1 with bit 31 set (a sign-extended int,
// which no excluded value with bit 31 clear can be).
void AllowExcept32(SeccompPolicy& policy, const char* name, unsigned index,
                   const std::vector<uint32_t>& excluded) {
  constexpr uint64_t kUpper = 0xffffffff00000000u;
  std::function<void(int, uint32_t, std::vector<uint32_t>)> walk =
      [&](int bit, uint32_t prefix, std::vector<uint32_t> left) {
        // Bits above `bit` are fixed to `prefix`.
        const uint64_t fixed = bit == 31 ? 0 : (0xffffffffu << (bit + 1)) & 0xffffffffu;
        if (left.empty()) {
          policy.rules.push_back(
              Rule(name, {{index, ArgMatch::Op::kMaskedEq, kUpper | fixed, prefix}}));
          return;
        }
        if (bit < 0) return;  // exactly an excluded value
        for (uint32_t b : {0u, 1u}) {
          std::vector<uint32_t> sub;
          for (uint32_t v : left)
            if (((v >> bit) & 1) == b) sub.push_back(v);
          walk(bit - 1, prefix | (b << bit), std::move(sub));
        }
      };
  walk(31, 0, excluded);
  bool any_high = false;
  for (uint32_t v : excluded) any_high |= (v >> 31) != 0;
  if (!any_high) {
    policy.rules.push_back(Rule(
        name, {{index, ArgMatch::Op::kMaskedEq, kUpper | 0x80000000u, kUpper | 0x80000000u}}));
  }
}

}  // namespace

SeccompPolicy VmmPolicy() {
  SeccompPolicy p;
  // Memory: the heap, thread stacks, guest memory (memfd), and the VM's
  // mappings.
  p.Allow({"brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "mincore", "msync",
           "mlock", "mlock2", "munlock", "membarrier", "memfd_create", "fallocate",
           "ftruncate", "get_mempolicy", "set_mempolicy", "mbind"});
  // Threads and their synchronisation. Only threads: clone must carry
  // CLONE_THREAD (no fork, no vfork) and no CLONE_NEW* flag (no namespace).
  // clone3 passes its flags in memory, which a filter cannot read: it fails
  // with ENOSYS, and glibc (2.34+) then falls back to clone.
  constexpr uint64_t kNamespaces = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
                                   CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;
  p.rules.push_back(Rule("clone", {{0, ArgMatch::Op::kMaskedEq,
                                    CLONE_THREAD | kNamespaces, CLONE_THREAD}}));
  SeccompRule clone3{"clone3"};
  clone3.errno_value = ENOSYS;
  p.rules.push_back(clone3);
  p.Allow({"futex", "futex_waitv", "set_robust_list", "get_robust_list", "set_tid_address",
           "rseq", "exit", "exit_group", "gettid", "getpid", "getppid", "sched_yield",
           "sched_getaffinity", "sched_getparam", "sched_getscheduler",
           "sched_get_priority_max", "sched_get_priority_min", "getcpu", "getpriority",
           "arch_prctl", "prctl", "restart_syscall", "capget", "seccomp"});
  // Priority and CPU placement of the calling thread only (who/pid 0): not
  // of another process that runs as the same user.
  p.rules.push_back(Rule("setpriority", {Arg32Is(0, PRIO_PROCESS), Arg32Is(1, 0)}));
  p.rules.push_back(Rule("sched_setaffinity", {Arg32Is(0, 0)}));
  p.rules.push_back(Rule("sched_setscheduler", {Arg32Is(0, 0)}));
  p.rules.push_back(Rule("prlimit64", {Arg32Is(0, 0)}));  // getrlimit/setrlimit
  p.Allow({"getrlimit"});
  // Signals: handlers, masks, and signals to this process only (pthread_kill
  // is tgkill(own pid, tid); raise is tgkill too).
  p.Allow({"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait",
           "rt_sigsuspend", "sigaltstack", "signalfd4"});
  p.rules.push_back(Rule("kill", {ArgIsOwnPid(0)}));
  p.rules.push_back(Rule("tgkill", {ArgIsOwnPid(0)}));
  // Time and timers.
  p.Allow({"clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday",
           "time", "timerfd_create", "timerfd_settime", "timerfd_gettime", "timer_create",
           "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete"});
  // Waiting for events.
  p.Allow({"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll",
           "ppoll", "select", "pselect6", "eventfd2", "pipe2"});
  // Files: the state directory and what glibc, gRPC and Ferry read.
  p.Allow({"openat", "close", "close_range", "read", "write", "readv", "writev", "pread64",
           "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "lseek", "fstat", "newfstatat",
           "statx", "fstatfs", "statfs", "getdents64", "readlink", "readlinkat", "access",
           "faccessat", "faccessat2", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir", "rename",
           "renameat", "renameat2", "fsync", "fdatasync", "flock", "fcntl", "dup", "dup2", "dup3",
           "getcwd", "umask", "fchmod", "sendfile", "copy_file_range",
           // a lazy restore's read-ahead of the snapshot (POSIX_FADV_WILLNEED)
           "fadvise64"});
  // Sockets: Unix, IPv4 and IPv6 only (no netlink, packet, vsock, alg...).
  for (int domain : {AF_UNIX, AF_INET, AF_INET6})
    p.rules.push_back(Rule("socket", {Arg32Is(0, domain)}));
  p.rules.push_back(Rule("socketpair", {Arg32Is(0, AF_UNIX)}));
  p.Allow({"bind", "listen", "accept", "accept4", "connect", "getsockopt", "setsockopt",
           "getsockname", "getpeername", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "sendto",
           "recvfrom", "shutdown"});
  // io_uring (the fetch channel), userfaultfd (the syscall; /dev/userfaultfd
  // is an openat and an ioctl).
  p.Allow({"io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd"});
  // ioctl: KVM, userfaultfd, sockets (FIONREAD) and terminals, except the
  // two that inject input into a terminal or drive the console.
  AllowExcept32(p, "ioctl", 1, {TIOCSTI, TIOCLINUX});
  // Identity and the machine, read only.
  p.Allow({"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
           "uname", "sysinfo", "getrandom", "getrusage", "times"});
  return p;
}

absl::Status ApplySandbox(const SandboxOptions& options) {
  if (options.uid.has_value() != options.gid.has_value())
    return absl::InvalidArgumentError("ApplySandbox: a user needs both a uid and a gid");
  if (options.nice_rlimit.has_value()) {
    const rlimit limit{static_cast<rlim_t>(*options.nice_rlimit),
                       static_cast<rlim_t>(*options.nice_rlimit)};
    // EPERM: no CAP_SYS_RESOURCE to raise the hard limit (see the header).
    if (::setrlimit(RLIMIT_NICE, &limit) != 0 && errno != EPERM)
      return ErrnoStatus(absl::StrCat("setrlimit(RLIMIT_NICE, ", *options.nice_rlimit, ")"), errno);
  }
  if (options.uid.has_value())
    RETURN_IF_ERROR(SwitchUser(*options.uid, *options.gid, options.groups));
  if (options.drop_capabilities) RETURN_IF_ERROR(DropCapabilities());
  RETURN_IF_ERROR(SetNoNewPrivs());
  if (options.non_dumpable && ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    return ErrnoStatus("prctl(PR_SET_DUMPABLE, 0)", errno);
  if (options.seccomp.has_value()) RETURN_IF_ERROR(InstallSeccompFilter(*options.seccomp));
  return absl::OkStatus();
}

}  // namespace ferry
