// The sandbox's steps cannot be undone, so every test runs its body in a
// forked child (InChild) and the parent checks what the child reported. The
// children never return into gtest: they _exit.
#include "base/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "base/net.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "base/status_matchers.h"
#include "base/unique_fd.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "sys/io_uring.h"
#include "sys/memfd.h"
#include "sys/userfaultfd.h"

namespace ferry {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr size_t kPage = 4096;

// Runs `body` in a forked child and returns the Status it returned, or how
// the child died. The child reports through a pipe and _exits.
absl::Status InChild(const std::function<absl::Status()>& body) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus("fork", errno);
  if (pid == 0) {
    ::close(p[0]);
    absl::Status s = body();
    std::string report = s.ok() ? "" : s.ToString();
    (void)!::write(p[1], report.data(), report.size());
    ::_exit(s.ok() ? 0 : 1);
  }
  ::close(p[1]);
  std::string report;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof(buf))) > 0) report.append(buf, n);
  ::close(p[0]);
  int wstatus = 0;
  if (::waitpid(pid, &wstatus, 0) != pid) return ErrnoStatus("waitpid", errno);
  if (WIFSIGNALED(wstatus))
    return absl::InternalError(absl::StrCat("child killed by signal ", WTERMSIG(wstatus)));
  if (WEXITSTATUS(wstatus) != 0)
    return absl::InternalError(absl::StrCat("child failed: ", report));
  return absl::OkStatus();
}

// Checks inside a child: a failed check is the child's Status.
#define CHILD_CHECK(cond)                                                             \
  do {                                                                                \
    if (!(cond))                                                                      \
      return absl::InternalError(absl::StrCat(__FILE__, ":", __LINE__, ": " #cond, \
                                              " (errno ", ErrnoName(errno), ")"));    \
  } while (false)

// A raw call that must fail with `err`.
#define CHILD_EXPECT_ERRNO(call, err)                                              \
  do {                                                                             \
    errno = 0;                                                                     \
    long rc_ = static_cast<long>(call);                                            \
    int e_ = errno;                                                                \
    if (rc_ != -1 || e_ != (err))                                                  \
      return absl::InternalError(absl::StrCat(__FILE__, ":", __LINE__, ": " #call, \
                                              " returned ", rc_, " errno ",        \
                                              ErrnoName(e_), ", want ", #err));    \
  } while (false)

// vm.unprivileged_userfaultfd, or -1 if unreadable.
int UnprivilegedUserfaultfd() {
  UniqueFd fd(::open("/proc/sys/vm/unprivileged_userfaultfd", O_RDONLY | O_CLOEXEC));
  char c = 0;
  if (!fd.valid() || ::read(fd.get(), &c, 1) != 1) return -1;
  return c - '0';
}

SandboxOptions FullSandbox() {
  SandboxOptions opts;
  opts.seccomp = VmmPolicy();
  return opts;
}

// /proc/self/pagemap opened with no effective capability never shows a
// physical frame number, even kept and read later by a process that had
// them all (the VMM opens it so before it becomes --user); opened with
// CAP_SYS_ADMIN it does. The effective set comes back afterwards.
TEST(Sandbox, PagemapOpenedWithoutCapabilitiesHidesFrameNumbers) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to have CAP_SYS_ADMIN";
  auto pfn_of = [](int fd, const volatile char* page) -> uint64_t {
    uint64_t entry = 0;
    const off_t at = static_cast<off_t>(reinterpret_cast<uintptr_t>(page) / 4096 * 8);
    if (::pread(fd, &entry, sizeof(entry), at) != sizeof(entry)) return ~uint64_t{0};
    return entry & ((uint64_t{1} << 55) - 1);
  };
  static volatile char page[4096] __attribute__((aligned(4096)));
  page[0] = 1;  // present
  int hidden = -1;
  ASSERT_TRUE(WithoutEffectiveCapabilities([&] {
                hidden = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
                return absl::OkStatus();
              }).ok());
  ASSERT_GE(hidden, 0);
  const int shown = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(shown, 0);
  EXPECT_EQ(pfn_of(hidden, page), 0u);
  EXPECT_NE(pfn_of(shown, page), 0u) << "root's own open shows frame numbers";
  ::close(hidden);
  ::close(shown);
}

TEST(Sandbox, NoNewPrivsReadsBackOne) {
  ASSERT_OK(InChild([]() -> absl::Status {
    CHILD_CHECK(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1);
    // (It may be set already: a test runner can set it for its children.)
    RETURN_IF_ERROR(NoNewPrivs().status());
    RETURN_IF_ERROR(SetNoNewPrivs());
    CHILD_CHECK(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
    // Threads created afterwards inherit it.
    int in_thread = -1;
    std::thread([&] { in_thread = ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); }).join();
    CHILD_CHECK(in_thread == 1);
    return absl::OkStatus();
  }));
  ASSERT_OK(InChild([]() -> absl::Status {
    SandboxOptions opts = FullSandbox();
    opts.non_dumpable = true;
    RETURN_IF_ERROR(ApplySandbox(opts));
    CHILD_CHECK(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
    CHILD_CHECK(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
    return absl::OkStatus();
  }));
}

TEST(Sandbox, DropCapabilitiesLeavesRootWithoutPrivilege) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to have capabilities to drop";
  // Root-owned files that root's permission bits let it use, and a file of
  // another user that only CAP_DAC_OVERRIDE would let root read.
  char dir[] = "/tmp/ferry-sandbox-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string own = absl::StrCat(dir, "/own");
  const std::string other = absl::StrCat(dir, "/other");
  for (const std::string& f : {own, other}) {
    UniqueFd fd(::open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.valid());
  }
  ASSERT_EQ(::chown(other.c_str(), 4242, 4242), 0);
  ASSERT_OK(InChild([&]() -> absl::Status {
    ASSIGN_OR_RETURN(CapabilitySets before, ReadCapabilities());
    CHILD_CHECK(before.effective != 0 && before.bounding != 0);
    RETURN_IF_ERROR(DropCapabilities());
    ASSIGN_OR_RETURN(CapabilitySets after, ReadCapabilities());
    CHILD_CHECK(after.empty());
    CHILD_CHECK(::getuid() == 0 && ::geteuid() == 0);
    // Idempotent.
    RETURN_IF_ERROR(DropCapabilities());
    // CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_SETUID, CAP_SYS_ADMIN are gone.
    CHILD_EXPECT_ERRNO(::chown(own.c_str(), 4242, 4242), EPERM);
    CHILD_EXPECT_ERRNO(::open(other.c_str(), O_RDONLY | O_CLOEXEC), EACCES);
    CHILD_EXPECT_ERRNO(::setresuid(4242, 4242, 4242), EPERM);
    CHILD_EXPECT_ERRNO(::sethostname("x", 1), EPERM);
    // What stays: root's own files by their permission bits (see
    // docs/security.md: configure a user to lose this too).
    UniqueFd fd(::open(own.c_str(), O_RDWR | O_CLOEXEC));
    CHILD_CHECK(fd.valid());
    // And a user switch is no longer possible.
    absl::Status s = SwitchUser(65534, 65534);
    CHILD_CHECK(s.code() == absl::StatusCode::kPermissionDenied);
    return absl::OkStatus();
  }));
  ::unlink(own.c_str());
  ::unlink(other.c_str());
  ::rmdir(dir);
}

TEST(Sandbox, DropCapabilitiesRefusesAProcessWithThreads) {
  ASSERT_OK(InChild([]() -> absl::Status {
    std::atomic<bool> stop{false};
    std::thread t([&] {
      while (!stop.load()) ::usleep(1000);
    });
    absl::Status s = DropCapabilities();
    stop = true;
    t.join();
    CHILD_CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHILD_CHECK(absl::StrContains(s.message(), "2 threads"));
    return absl::OkStatus();
  }));
}

TEST(Sandbox, SwitchUserToNobodyLosesEveryCapability) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  ASSERT_OK(InChild([]() -> absl::Status {
    RETURN_IF_ERROR(SwitchUser(65534, 65534, {65533}));
    CHILD_CHECK(::getuid() == 65534 && ::getgid() == 65534);
    gid_t groups[4];
    CHILD_CHECK(::getgroups(4, groups) == 1 && groups[0] == 65533);
    ASSIGN_OR_RETURN(CapabilitySets caps, ReadCapabilities());
    CHILD_CHECK(caps.empty());  // bounding set included
    // Nothing left to drop; still succeeds.
    RETURN_IF_ERROR(DropCapabilities());
    // No way back.
    CHILD_EXPECT_ERRNO(::setresuid(0, 0, 0), EPERM);
    absl::Status s = SwitchUser(0, 0);
    CHILD_CHECK(s.code() == absl::StatusCode::kPermissionDenied);
    return absl::OkStatus();
  }));
}

TEST(Sandbox, AnUnprivilegedUserNeedsAccessToDevUserfaultfd) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  if (UnprivilegedUserfaultfd() != 0) GTEST_SKIP() << "vm.unprivileged_userfaultfd is not 0";
  struct stat st {};
  if (::stat("/dev/userfaultfd", &st) != 0 || (st.st_mode & 0007) != 0)
    GTEST_SKIP() << "needs a /dev/userfaultfd that others cannot open";
  // Without access, Userfaultfd::Open says why both ways failed.
  ASSERT_OK(InChild([]() -> absl::Status {
    SandboxOptions opts = FullSandbox();
    opts.uid = 65534;
    opts.gid = 65534;
    RETURN_IF_ERROR(ApplySandbox(opts));
    absl::Status s = sys::Userfaultfd::Open(UFFD_FEATURE_MISSING_SHMEM).status();
    CHILD_CHECK(s.code() == absl::StatusCode::kPermissionDenied);
    CHILD_CHECK(absl::StrContains(s.message(), "open(/dev/userfaultfd)"));
    CHILD_CHECK(absl::StrContains(s.message(), "userfaultfd(2)"));
    return absl::OkStatus();
  }));
  // With read-write access to the device node through a group (a copy of
  // the node, mode 0660 root:65533, so the machine's own is left alone), the
  // same user gets a userfaultfd with no capability at all.
  char dir[] = "/tmp/ferry-sandbox-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  ASSERT_EQ(::chmod(dir, 0755), 0);
  const std::string node = absl::StrCat(dir, "/userfaultfd");
  ASSERT_EQ(::mknod(node.c_str(), S_IFCHR | 0660, st.st_rdev), 0) << strerror(errno);
  ASSERT_EQ(::chown(node.c_str(), 0, 65533), 0);
  ASSERT_EQ(::chmod(node.c_str(), 0660), 0);
  ASSERT_OK(InChild([&]() -> absl::Status {
    SandboxOptions opts = FullSandbox();
    opts.uid = 65534;
    opts.gid = 65534;
    opts.groups = {65533};
    RETURN_IF_ERROR(ApplySandbox(opts));
    UniqueFd dev(::open(node.c_str(), O_RDWR | O_CLOEXEC));
    CHILD_CHECK(dev.valid());
    UniqueFd uffd(::ioctl(dev.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK));
    CHILD_CHECK(uffd.valid());
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_MISSING_SHMEM;
    CHILD_CHECK(::ioctl(uffd.get(), UFFDIO_API, &api) == 0);
    return absl::OkStatus();
  }));
  ::unlink(node.c_str());
  ::rmdir(dir);
}

TEST(Sandbox, RefusedCallsFailWithEpermAndTheProcessGoesOn) {
  ASSERT_OK(InChild([]() -> absl::Status {
    RETURN_IF_ERROR(ApplySandbox(FullSandbox()));
    CHILD_EXPECT_ERRNO(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr), EPERM);
    CHILD_EXPECT_ERRNO(::mount("none", "/mnt", "tmpfs", 0, nullptr), EPERM);
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    CHILD_EXPECT_ERRNO(::execve("/bin/true", argv, environ), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_execveat, AT_FDCWD, "/bin/true", argv, environ, 0), EPERM);
    CHILD_EXPECT_ERRNO(::unshare(CLONE_NEWUSER), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_setns, 0, 0), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_bpf, 0, nullptr, 0), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_init_module, nullptr, 0, ""), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_keyctl, 0, 0, 0, 0, 0), EPERM);
    CHILD_EXPECT_ERRNO(::setresuid(0, 0, 0), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_capset, nullptr, nullptr), EPERM);
    char byte;
    iovec local{&byte, 1}, remote{&byte, 1};
    CHILD_EXPECT_ERRNO(::process_vm_readv(::getppid(), &local, 1, &remote, 1, 0), EPERM);
    // Only threads: a clone that makes a process, or a namespace, is
    // refused; clone3 (whose flags a filter cannot read) says ENOSYS so that
    // glibc falls back to clone.
    CHILD_EXPECT_ERRNO(::fork(), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_clone, CLONE_NEWUSER | CLONE_THREAD | CLONE_SIGHAND |
                                                CLONE_VM, nullptr, nullptr, nullptr, 0),
                       EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_clone3, nullptr, 0), ENOSYS);
    // Sockets: Unix, IPv4 and IPv6 only.
    CHILD_EXPECT_ERRNO(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0), EPERM);
    CHILD_EXPECT_ERRNO(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0), EPERM);
    // The terminal-injection ioctls, also with high bits the kernel drops.
    CHILD_EXPECT_ERRNO(::syscall(SYS_ioctl, 0, TIOCSTI, "x"), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_ioctl, 0, TIOCSTI | (1ul << 32), "x"), EPERM);
    // Still alive, and allowed calls still work.
    CHILD_CHECK(::getpid() > 0);
    UniqueFd fd(::memfd_create("still-alive", MFD_CLOEXEC));
    CHILD_CHECK(fd.valid());
    return absl::OkStatus();
  }));
}

TEST(Sandbox, LogModeAllowsAndLogsWhatTheListMisses) {
  // personality(0xffffffff) only reads the persona; it is not in the list.
  ASSERT_OK(InChild([]() -> absl::Status {
    SeccompPolicy policy = VmmPolicy();
    policy.default_action = SeccompPolicy::Default::kLog;
    RETURN_IF_ERROR(InstallSeccompFilter(policy));
    CHILD_CHECK(::personality(0xffffffff) != -1);
    return absl::OkStatus();
  }));
  ASSERT_OK(InChild([]() -> absl::Status {
    RETURN_IF_ERROR(InstallSeccompFilter(VmmPolicy()));
    CHILD_EXPECT_ERRNO(::personality(0xffffffff), EPERM);
    return absl::OkStatus();
  }));
}

TEST(Sandbox, UnknownSyscallNameIsRefusedBeforeLoading) {
  ASSERT_OK(InChild([]() -> absl::Status {
    SeccompPolicy policy;
    policy.Allow({"read", "no_such_call"});
    absl::Status s = InstallSeccompFilter(policy);
    CHILD_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHILD_CHECK(absl::StrContains(s.message(), "no_such_call"));
    // Nothing was loaded.
    CHILD_CHECK(::prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 0);
    return absl::OkStatus();
  }));
}

TEST(Sandbox, VmmPolicyNamesOnlyKnownCallsAndNoForbiddenOne) {
  SeccompPolicy policy = VmmPolicy();
  std::vector<std::string> names = policy.SyscallNames();
  EXPECT_GT(names.size(), 100u);
  for (const char* forbidden :
       {"execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "mount",
        "umount2", "pivot_root", "chroot", "kexec_load", "kexec_file_load", "init_module",
        "finit_module", "delete_module", "bpf", "perf_event_open", "keyctl", "add_key",
        "request_key", "reboot", "swapon", "swapoff", "setuid", "setresuid", "setgid",
        "setresgid", "setgroups", "capset", "unshare", "setns", "open_by_handle_at",
        "name_to_handle_at", "fork", "vfork", "fsopen", "pidfd_open", "pidfd_send_signal",
        "pidfd_getfd", "kcmp", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "move_mount",
        "open_tree", "syslog", "acct", "settimeofday", "clock_settime", "iopl", "ioperm"}) {
    EXPECT_EQ(std::count(names.begin(), names.end(), forbidden), 0) << forbidden;
  }
}

TEST(Sandbox, AVmmsWorkStillWorks) {
  ASSERT_OK(InChild([]() -> absl::Status {
    // What a VMM opens before the sandbox: its memory and its listener.
    ASSIGN_OR_RETURN(sys::MemfdMapping memory, sys::MemfdMapping::Create("guest", 16 * kPage, kPage));
    ASSIGN_OR_RETURN(TcpListener listener, ListenTcp("127.0.0.1:0"));
    RETURN_IF_ERROR(ApplySandbox(FullSandbox()));
    ASSIGN_OR_RETURN(CapabilitySets caps, ReadCapabilities());
    CHILD_CHECK(caps.empty());

    // memfd + mmap, fallocate (punch), ftruncate.
    ASSIGN_OR_RETURN(sys::MemfdMapping more, sys::MemfdMapping::Create("more", 4 * kPage, kPage));
    more.data()[0] = 7;
    RETURN_IF_ERROR(more.PunchHole(0, kPage));
    CHILD_CHECK(more.data()[0] == 0);
    CHILD_CHECK(::ftruncate(more.fd(), 8 * kPage) == 0);

    // userfaultfd without capabilities: with vm.unprivileged_userfaultfd=0
    // the syscall needs CAP_SYS_PTRACE for a userfaultfd that also handles
    // the kernel's own faults, so it fails with EPERM; Userfaultfd::Open
    // goes through /dev/userfaultfd (root's, mode 0600: uid 0 opens it by
    // its permission bits, no capability needed).
    if (UnprivilegedUserfaultfd() == 0) {
      CHILD_EXPECT_ERRNO(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), EPERM);
    }
    ASSIGN_OR_RETURN(sys::Userfaultfd uffd,
                     sys::Userfaultfd::Open(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_SIGBUS));
    ASSIGN_OR_RETURN(uint64_t ioctls,
                     uffd.Register(memory.data(), memory.size(), UFFDIO_REGISTER_MODE_MISSING));
    CHILD_CHECK(ioctls & (uint64_t{1} << _UFFDIO_COPY));
    uint8_t page[kPage];
    std::memset(page, 0xab, sizeof(page));
    ASSIGN_OR_RETURN(sys::InstallResult r, uffd.Copy(memory.data(), page, kPage));
    CHILD_CHECK(r.installed == kPage);
    CHILD_CHECK(memory.data()[0] == 0xab);
    // An ioctl request passed as a sign-extended int (bit 31 set) still
    // passes the ioctl rule; the kernel reads the low 32 bits.
    uffdio_range range{reinterpret_cast<uint64_t>(memory.data()), kPage};
    const unsigned long wake = static_cast<unsigned long>(static_cast<int>(UFFDIO_WAKE));
    CHILD_CHECK(wake >> 32 == 0xffffffffu);
    CHILD_CHECK(::syscall(SYS_ioctl, uffd.fd(), wake, &range) == 0);

    // io_uring: a send and a receive over a socket pair.
    ASSIGN_OR_RETURN(auto ring, sys::IoUring::Create(8, /*single_issuer=*/true));
    int sp[2];
    CHILD_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
    UniqueFd a(sp[0]), b(sp[1]);
    char out[4] = {'f', 'e', 'r', 'y'}, in[4] = {};
    RETURN_IF_ERROR(ring->PrepareSend(a.get(), out, 4, 1));
    RETURN_IF_ERROR(ring->PrepareRecv(b.get(), in, 4, 2, /*wait_all=*/true));
    RETURN_IF_ERROR(ring->SubmitAndWait(2));
    CHILD_CHECK(std::memcmp(in, out, 4) == 0);
    int pending = -1;
    CHILD_CHECK(::ioctl(a.get(), FIONREAD, &pending) == 0 && pending == 0);

    // TCP on loopback: a listener opened before and one opened after.
    for (int i = 0; i < 2; ++i) {
      TcpListener after;
      if (i == 1) {
        ASSIGN_OR_RETURN(after, ListenTcp("127.0.0.1:0"));
      }
      const TcpListener& l = i == 0 ? listener : after;
      ASSIGN_OR_RETURN(UniqueFd client, ConnectTcp(absl::StrCat("127.0.0.1:", l.port), 5000));
      UniqueFd server(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      CHILD_CHECK(server.valid());
      RETURN_IF_ERROR(SendAll(client.get(), "ping", 4));
      char got[4];
      RETURN_IF_ERROR(RecvAll(server.get(), got, 4, 5000));
      CHILD_CHECK(std::memcmp(got, "ping", 4) == 0);
    }

    // Threads, with a mutex and a condition variable (futex).
    std::mutex mu;
    std::condition_variable cv;
    bool ran = false;
    std::thread t([&] {
      std::lock_guard<std::mutex> l(mu);
      ran = true;
      cv.notify_all();
    });
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait_for(l, std::chrono::seconds(5), [&] { return ran; });
    }
    t.join();
    CHILD_CHECK(ran);
    // A thread lowers its own priority (ScopedThreadNice), and only its own;
    // it returns to 0 where ApplySandbox could raise RLIMIT_NICE (it needs
    // CAP_SYS_RESOURCE, which some containers lack).
    {
      ScopedThreadNice nice(5);
      CHILD_CHECK(::getpriority(PRIO_PROCESS, 0) == 5);
    }
    rlimit nice_limit{};
    CHILD_CHECK(::getrlimit(RLIMIT_NICE, &nice_limit) == 0);
    CHILD_CHECK(::getpriority(PRIO_PROCESS, 0) == (nice_limit.rlim_cur >= 20 ? 0 : 5));
    CHILD_EXPECT_ERRNO(::setpriority(PRIO_PROCESS, ::getppid(), 5), EPERM);
    // Signals to itself only: pthread_kill of its own thread, not kill of
    // another process of the same user (its parent here), nor of all (-1).
    static std::atomic<int> got{0};
    struct sigaction sa {};
    sa.sa_handler = [](int) { got.fetch_add(1); };
    CHILD_CHECK(::sigaction(SIGUSR1, &sa, nullptr) == 0);
    CHILD_CHECK(::pthread_kill(::pthread_self(), SIGUSR1) == 0);
    CHILD_CHECK(::kill(::getpid(), SIGUSR1) == 0);
    CHILD_CHECK(got.load() == 2);
    CHILD_EXPECT_ERRNO(::kill(::getppid(), 0), EPERM);
    CHILD_EXPECT_ERRNO(::kill(-1, 0), EPERM);
    CHILD_EXPECT_ERRNO(::syscall(SYS_tgkill, ::getppid(), ::getppid(), 0), EPERM);
    return absl::OkStatus();
  }));
}

// What a VMM does to write and read a snapshot (migration/snapshot/): a
// directory made 0700 beside the target, files created 0600, sparse writes
// with holes punched, everything synced, the directory renamed into place
// (and removed again after a failure), then reopened and read, and holes
// found with SEEK_DATA/SEEK_HOLE. Paths are the operator's, given through
// ferryd: the filter allows the calls, the file system's permissions
// decide where.
TEST(Sandbox, SnapshotFileCallsWorkInsideTheSandbox) {
  char base[] = "/tmp/ferry-sandbox-snap-XXXXXX";
  ASSERT_NE(::mkdtemp(base), nullptr);
  const std::string parent = base;
  ASSERT_OK(InChild([&]() -> absl::Status {
    RETURN_IF_ERROR(ApplySandbox(FullSandbox()));
    const std::string tmp = parent + "/snap.tmp-1", dir = parent + "/snap";
    struct stat st;
    CHILD_EXPECT_ERRNO(::lstat(dir.c_str(), &st), ENOENT);
    CHILD_CHECK(::stat(parent.c_str(), &st) == 0 && S_ISDIR(st.st_mode));
    CHILD_CHECK(::mkdir(tmp.c_str(), 0700) == 0);
    const std::string memory = tmp + "/memory";
    UniqueFd fd(::open(memory.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    CHILD_CHECK(fd.valid());
    CHILD_CHECK(::fchmod(fd.get(), 0600) == 0);
    CHILD_CHECK(::ftruncate(fd.get(), 64 * kPage) == 0);
    std::string page(kPage, 'x');
    CHILD_CHECK(::pwrite(fd.get(), page.data(), kPage, 8 * kPage) == static_cast<ssize_t>(kPage));
    CHILD_CHECK(::pwrite(fd.get(), page.data(), kPage, 9 * kPage) == static_cast<ssize_t>(kPage));
    // A page zeroed since an earlier round: punched back to a hole.
    CHILD_CHECK(
        ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 9 * kPage, kPage) == 0);
    CHILD_CHECK(::fsync(fd.get()) == 0 && ::fdatasync(fd.get()) == 0);
    // A lazy restore's read-ahead of the memory file.
    CHILD_CHECK(::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_WILLNEED) == 0);
    {
      UniqueFd d(::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      CHILD_CHECK(d.valid() && ::fsync(d.get()) == 0);
    }
    CHILD_CHECK(::rename(tmp.c_str(), dir.c_str()) == 0);
    CHILD_CHECK(::syscall(SYS_renameat2, AT_FDCWD, dir.c_str(), AT_FDCWD, dir.c_str(),
                          RENAME_NOREPLACE) == -1 &&
                errno == EEXIST);
    // Read back as a restore does.
    UniqueFd in(::open((dir + "/memory").c_str(), O_RDONLY | O_CLOEXEC));
    CHILD_CHECK(in.valid() && ::fstat(in.get(), &st) == 0 && st.st_size == 64 * kPage);
    CHILD_CHECK((st.st_mode & 0777) == 0600);
    struct statx sx;
    CHILD_CHECK(::statx(AT_FDCWD, dir.c_str(), 0, STATX_MODE, &sx) == 0 &&
                (sx.stx_mode & 0777) == 0700);
    char got[8] = {};
    CHILD_CHECK(::pread(in.get(), got, sizeof(got), 8 * kPage) == sizeof(got) && got[0] == 'x');
    const off_t data = ::lseek(in.get(), 0, SEEK_DATA);
    CHILD_CHECK(data >= 0 && data <= static_cast<off_t>(8 * kPage));
    CHILD_CHECK(::lseek(in.get(), 8 * kPage, SEEK_HOLE) >= static_cast<off_t>(9 * kPage));
    // Cleanup of a directory: listed, its files unlinked, removed.
    int files = 0;
    {
      DIR* d = ::opendir(dir.c_str());
      CHILD_CHECK(d != nullptr);
      while (dirent* e = ::readdir(d)) files += e->d_name[0] != '.';
      ::closedir(d);
    }
    CHILD_CHECK(files == 1);
    CHILD_CHECK(::unlink((dir + "/memory").c_str()) == 0);
    CHILD_CHECK(::rmdir(dir.c_str()) == 0);
    return absl::OkStatus();
  }));
  ::rmdir(base);
}

// One unary call of grpc.health.v1.Health/Check on `target`; the response's
// bytes.
absl::StatusOr<std::string> HealthCheck(const std::string& target) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);  // HealthCheckRequest{service: ""}
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> l(mu);
                   status = s;
                   done = true;
                   cv.notify_all();
                 });
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done; });
  if (!status.ok())
    return absl::UnavailableError(absl::StrCat(target, ": ", status.error_message()));
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::InternalError("ByteBuffer::Dump");
  std::string bytes;
  for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

TEST(Sandbox, GrpcServerAndClientWorkInsideTheSandbox) {
  const std::string socket_path = absl::StrCat("/tmp/ferry-sandbox-", ::getpid(), ".sock");
  ::unlink(socket_path.c_str());
  ASSERT_OK(InChild([&]() -> absl::Status {
    // Sandboxed before gRPC starts any thread, as ferry-vmm's main() does.
    RETURN_IF_ERROR(ApplySandbox(FullSandbox()));
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.AddListeningPort(absl::StrCat("unix:", socket_path), grpc::InsecureServerCredentials());
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    CHILD_CHECK(server != nullptr && port > 0);
    const std::string serving("\x08\x01", 2);  // HealthCheckResponse{SERVING}
    for (int i = 0; i < 3; ++i) {
      ASSIGN_OR_RETURN(std::string tcp, HealthCheck(absl::StrCat("127.0.0.1:", port)));
      CHILD_CHECK(tcp == serving);
      ASSIGN_OR_RETURN(std::string unix_socket, HealthCheck(absl::StrCat("unix:", socket_path)));
      CHILD_CHECK(unix_socket == serving);
    }
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server->Wait();
    return absl::OkStatus();
  }));
  ::unlink(socket_path.c_str());
}

}  // namespace
}  // namespace ferry
