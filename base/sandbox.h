// The least-privilege sandbox a VMM process puts itself in, as Firecracker's
// jailer does, with only what Debian ships: no_new_privs, no capabilities,
// an optional unprivileged user, and a seccomp filter (libseccomp) that
// refuses every system call outside an allow list.
//
// Everything here is one-way: nothing can be undone for the process, and
// children inherit it. Tests therefore run each step in a forked child.
//
// Order (ApplySandbox does exactly this; a caller that applies the steps one
// by one must keep it):
//   1. Open everything the process needs that the sandbox would refuse
//      (/dev/kvm, /dev/userfaultfd, its state directory, listening sockets
//      it cannot bind as the new user).
//   2. SwitchUser, if a user is configured (needs CAP_SETUID/CAP_SETGID, so
//      before step 3).
//   3. DropCapabilities.
//   4. SetNoNewPrivs (and PR_SET_DUMPABLE 0, if asked).
//   5. InstallSeccompFilter, last: after it, setresuid, capset, execve and
//      the rest are refused.
// All of it before the process starts any thread: capabilities and
// no_new_privs belong to a thread, and a thread created later inherits its
// creator's (the seccomp filter alone is synchronised onto every thread).
//
//   SandboxOptions opts;
//   opts.seccomp = VmmPolicy();
//   RETURN_IF_ERROR(ApplySandbox(opts));
#ifndef FERRY_BASE_SANDBOX_H_
#define FERRY_BASE_SANDBOX_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry {

// Sets PR_SET_NO_NEW_PRIVS on the calling thread (threads it creates and
// children inherit it): execve can no longer grant privileges (setuid bits,
// file capabilities), and an unprivileged process may install seccomp
// filters. Cannot be cleared.
absl::Status SetNoNewPrivs();

// Whether PR_GET_NO_NEW_PRIVS reads 1 for the calling thread.
absl::StatusOr<bool> NoNewPrivs();

// Drops every capability: clears the ambient set, removes every capability
// from the bounding set (up to /proc/sys/kernel/cap_last_cap), then empties
// the effective, permitted and inheritable sets (capset). The uid does not
// change: a root process stays uid 0 with no capabilities, so the kernel
// treats it as an unprivileged process that owns root's files.
//
// Preconditions: the process has one thread (the sets are per thread;
// FailedPrecondition otherwise, when /proc/self/status says so); a non-empty
// bounding set needs CAP_SETPCAP to be emptied (PermissionDenied naming the
// capability otherwise). Idempotent: on a process that holds nothing it does
// nothing and succeeds. After it, SwitchUser fails (no CAP_SETUID).
absl::Status DropCapabilities();

// The calling thread's capability sets (capget) and whether each is empty.
struct CapabilitySets {
  uint64_t effective = 0;
  uint64_t permitted = 0;
  uint64_t inheritable = 0;
  uint64_t bounding = 0;  // from PR_CAPBSET_READ
  uint64_t ambient = 0;   // from PR_CAP_AMBIENT_IS_SET
  bool empty() const {
    return (effective | permitted | inheritable | bounding | ambient) == 0;
  }
};
absl::StatusOr<CapabilitySets> ReadCapabilities();

// Runs `f` with the calling thread's effective capability set empty, then
// restores it (the permitted set is untouched). For a file whose content
// the kernel decides by the opener's capabilities, e.g. /proc/self/pagemap,
// which shows physical frame numbers only to an opener with CAP_SYS_ADMIN:
// opened so, a descriptor kept past a privilege drop never shows them.
absl::Status WithoutEffectiveCapabilities(const std::function<absl::Status()>& f);

// Becomes `uid`:`gid` with exactly the supplementary `groups` (setgroups,
// setresgid, setresuid: real, effective and saved ids all change, so there is
// no way back). Needs CAP_SETUID and CAP_SETGID: call it before
// DropCapabilities. Before changing ids it empties the bounding and ambient
// sets (while it still holds CAP_SETPCAP); switching from uid 0 to another
// uid makes the kernel clear the permitted and effective sets, so after it a
// non-root process holds no capability and DropCapabilities finds nothing
// left to drop. Reads the ids back and fails with Internal if they differ.
//
// Supplementary groups are how an unprivileged VMM reaches /dev/kvm (group
// "kvm" on Debian, mode 0660) and /dev/userfaultfd (mode 0600 root by
// default: give it a group, see docs/security.md).
absl::Status SwitchUser(uid_t uid, gid_t gid,
                        const std::vector<gid_t>& groups = {});

// One rule of a seccomp filter: what to do with one system call, optionally
// only when one argument matches.
struct SeccompRule {
  // The system call's name as libseccomp knows it ("openat").
  std::string syscall;
  // 0: allow. Otherwise: fail the call with this errno (ENOSYS, to make
  // glibc fall back to an older call that the filter can inspect).
  int errno_value = 0;
  // Conditions on the arguments, all of which must hold (AND) for the rule
  // to apply; a call that matches no rule gets the policy's default action.
  // At most one condition per argument (libseccomp refuses more: the
  // install fails with InvalidArgument). kMaskedEq: (argument & mask) ==
  // value. kNe: argument != value on all 64 bits, so never for an argument
  // the kernel reads as 32 bits: a caller would set a high bit, pass the
  // check, and the kernel would drop the bit (VmmPolicy's ioctl rule shows
  // how to exclude values safely with kMaskedEq alone).
  // self_pid: the value is the pid of the process that installs the filter
  // (read then, so a policy built before a fork still names the child).
  struct ArgMatch {
    enum class Op { kMaskedEq, kNe };
    unsigned index = 0;
    Op op = Op::kMaskedEq;
    uint64_t mask = ~uint64_t{0};
    uint64_t value = 0;
    bool self_pid = false;
  };
  std::vector<ArgMatch> when;
};

struct SeccompPolicy {
  std::vector<SeccompRule> rules;
  // What a call that matches no rule gets. kErrno: it fails with EPERM (the
  // process goes on and sees a clear error; the filter never kills). kLog:
  // it is allowed and the kernel logs it ("audit: type=1326 ... syscall=N"
  // in dmesg): to find what a policy misses, never for production.
  enum class Default { kErrno, kLog };
  Default default_action = Default::kErrno;
  // Also log every refused call (SCMP_FLTATR_CTL_LOG) to the kernel log.
  bool log_refused = false;

  // Adds an unconditional allow rule for each name.
  void Allow(std::initializer_list<const char*> names);
  // The rules' system call names, sorted, each once.
  std::vector<std::string> SyscallNames() const;
};

// Builds the filter and loads it onto every thread of the process
// (SCMP_FLTATR_CTL_TSYNC), setting no_new_privs if it is not set yet (an
// unprivileged process cannot install a filter without it). Calls made by
// another architecture's ABI get EPERM too. Irreversible; a second filter
// can only narrow the first.
//
// Fails with InvalidArgument naming a system call libseccomp does not know
// (the filter is not loaded then), and with the kernel's error if loading
// fails (e.g. a thread already runs another filter).
absl::Status InstallSeccompFilter(const SeccompPolicy& policy);

// The allow list of a ferry-vmm process: gRPC servers and clients (TCP and
// Unix sockets), threads, epoll, io_uring, userfaultfd, memfd, KVM ioctls,
// its state directory. Refused: execve, ptrace, process_vm_*, mount, bpf,
// perf_event_open, module and kexec calls, keyctl, setuid and capset
// families, namespaces (unshare, setns, clone with CLONE_NEW*), and every
// other call not listed. Arguments checked: clone makes threads only
// (CLONE_THREAD; clone3 fails with ENOSYS so glibc falls back to clone);
// socket takes AF_UNIX/AF_INET/AF_INET6; kill/tgkill reach only the
// installing process; setpriority, sched_setaffinity, sched_setscheduler and
// prlimit64 act on the caller only (0); ioctl takes every request but
// TIOCSTI and TIOCLINUX. docs/security.md ("The VMM sandbox") has the lists
// and how they were derived.
SeccompPolicy VmmPolicy();

// The whole sandbox in the order above, after setting RLIMIT_NICE.
struct SandboxOptions {
  // Become this user and group (with these supplementary groups) first.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;
  // Drop every capability (always, unless a test turns it off).
  bool drop_capabilities = true;
  // RLIMIT_NICE (soft and hard) set first, while capabilities are held: 20
  // lets a thread that lowered its priority (ScopedThreadNice) return to
  // nice 0 without CAP_SYS_NICE, and no higher. Best effort, like
  // SetThreadNice itself: raising the hard limit needs CAP_SYS_RESOURCE,
  // and where the process lacks it (some containers) the limit stays and a
  // lowered thread stays lowered; ApplySandbox does not fail for that.
  // nullopt leaves the limit alone.
  std::optional<int> nice_rlimit = 20;
  // PR_SET_DUMPABLE 0 before the filter: no core dumps, and this process's
  // /proc/<pid> files (mem, pagemap, maps, fds) become root's, so another
  // process of the same user without CAP_SYS_PTRACE (another VMM) can no
  // longer read or write its memory through /proc/<pid>/mem. Off by default
  // because it also takes /proc/self/pagemap from a process that switched
  // user: open it (sys/pagemap_scan) before ApplySandbox, then turn this on.
  bool non_dumpable = false;
  // The filter; nullopt installs none.
  std::optional<SeccompPolicy> seccomp;
};
absl::Status ApplySandbox(const SandboxOptions& options);

}  // namespace ferry

#endif  // FERRY_BASE_SANDBOX_H_
