// ThreadSanitizer annotations for Debian's (uninstrumented) absl::Mutex,
// absl::CondVar and absl::Notification; linked into every test of the TSan
// build (./dev tsan) and nowhere else.
//
// Why: libabsl_synchronization.so is not built with -fsanitize=thread. Its
// Mutex locks with atomics and futex(2), neither of which ThreadSanitizer
// sees, so without these annotations every access guarded by an absl::Mutex
// would be reported as a race. An instrumented absl annotates itself with the
// __tsan_mutex_* calls below (ABSL_TSAN_MUTEX_*); here the linker does it from
// outside: -Wl,--wrap=SYMBOL (BUILD.bazel) sends our code's calls of SYMBOL to
// __wrap_SYMBOL, which annotates and calls the real one, __real_SYMBOL.
// Only calls from our code are annotated, which is all the tests need: grpc's
// own locking stays unseen, as do its memory accesses.
//
// Contract of the annotations, as in absl's own (mutex.cc):
//  - a lock is __tsan_mutex_pre_lock, the real lock, __tsan_mutex_post_lock;
//    an unlock is __tsan_mutex_pre_unlock, the real unlock,
//    __tsan_mutex_post_unlock. Between pre and post, TSan ignores the
//    thread's memory accesses: that is where absl evaluates the
//    absl::Condition of waiters, under the real lock.
//  - Await and CondVar::Wait release the lock and take it again: annotated as
//    an unlock then a lock, around the real call (when the condition already
//    holds the real Await does not release; the annotations are still right,
//    as nobody else can take the lock in between).
//  - Await, LockWhen and CondVar::Wait are annotated as writer locks: our
//    code waits only with the lock held as a writer (a reader would make TSan
//    report a mismatched unlock, not hide a race).
//  - Notification::Notify releases, and a true WaitForNotification* or
//    HasBeenNotified acquires. HasBeenNotified is inline (an instrumented
//    acquire load of notified_yet_ in our code), so Notify also releases on
//    the address of notified_yet_.
//
// The mangled names are Debian 12's absl (20220623, inline namespace
// debian3); the static_asserts below fail to compile on another absl rather
// than leave the wrappers silently unused.
#include <atomic>
#include <cstddef>

#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

using Mutex = absl::debian3::Mutex;  // fails to compile on another absl
using CondVar = absl::debian3::CondVar;
using Notification = absl::debian3::Notification;
using Condition = absl::debian3::Condition;
using Duration = absl::debian3::Duration;
using Time = absl::debian3::Time;

// absl::Notification's private members, in its order (notification.h).
struct NotificationLayout {
  Mutex mutex_;
  std::atomic<bool> notified_yet_;
};
static_assert(sizeof(NotificationLayout) == sizeof(Notification));

void* NotifiedYet(const Notification* n) {
  return const_cast<char*>(reinterpret_cast<const char*>(n)) +
         offsetof(NotificationLayout, notified_yet_);
}

// ReleasableMutexLock's only member (mutex.h).
struct ReleasableMutexLockLayout {
  Mutex* mu_;
};
static_assert(sizeof(ReleasableMutexLockLayout) == sizeof(absl::ReleasableMutexLock));

constexpr unsigned kRead = __tsan_mutex_read_lock;
constexpr unsigned kTry = __tsan_mutex_try_lock;
constexpr unsigned kTryFailed = __tsan_mutex_try_lock_failed;

void Unlocked(Mutex* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_mutex_post_unlock(mu, 0);
}

}  // namespace

// One wrapper per symbol: W(ret, mangled name, params, args, body), where the
// body calls the real function through `real(args)`.
#define FERRY_TSAN_WRAP(ret, sym, params, args, ...)       \
  extern "C" ret __real_##sym params;                      \
  extern "C" ret __wrap_##sym params {                     \
    auto real = [&] { return __real_##sym args; };         \
    __VA_ARGS__                                            \
  }

// Mutex: lock, unlock, try.
FERRY_TSAN_WRAP(void, _ZN4absl7debian35Mutex4LockEv, (Mutex * mu), (mu), {
  __tsan_mutex_pre_lock(mu, 0);
  real();
  __tsan_mutex_post_lock(mu, 0, 0);
})
FERRY_TSAN_WRAP(void, _ZN4absl7debian35Mutex10ReaderLockEv, (Mutex * mu), (mu), {
  __tsan_mutex_pre_lock(mu, kRead);
  real();
  __tsan_mutex_post_lock(mu, kRead, 0);
})
FERRY_TSAN_WRAP(void, _ZN4absl7debian35Mutex6UnlockEv, (Mutex * mu), (mu), {
  __tsan_mutex_pre_unlock(mu, 0);
  real();
  __tsan_mutex_post_unlock(mu, 0);
})
FERRY_TSAN_WRAP(void, _ZN4absl7debian35Mutex12ReaderUnlockEv, (Mutex * mu), (mu), {
  __tsan_mutex_pre_unlock(mu, kRead);
  real();
  __tsan_mutex_post_unlock(mu, kRead);
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian35Mutex7TryLockEv, (Mutex * mu), (mu), {
  __tsan_mutex_pre_lock(mu, kTry);
  const bool ok = real();
  __tsan_mutex_post_lock(mu, kTry | (ok ? 0 : kTryFailed), 0);
  return ok;
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian35Mutex13ReaderTryLockEv, (Mutex * mu), (mu), {
  __tsan_mutex_pre_lock(mu, kRead | kTry);
  const bool ok = real();
  __tsan_mutex_post_lock(mu, kRead | kTry | (ok ? 0 : kTryFailed), 0);
  return ok;
})
FERRY_TSAN_WRAP(void, _ZN4absl7debian35MutexD1Ev, (Mutex * mu), (mu), {
  __tsan_mutex_destroy(mu, 0);
  real();
})
FERRY_TSAN_WRAP(void, _ZN4absl7debian35MutexD2Ev, (Mutex * mu), (mu), {
  __tsan_mutex_destroy(mu, 0);
  real();
})
FERRY_TSAN_WRAP(void, _ZN4absl7debian319ReleasableMutexLock7ReleaseEv,
                (absl::ReleasableMutexLock * l), (l), {
  Mutex* mu = reinterpret_cast<ReleasableMutexLockLayout*>(l)->mu_;
  __tsan_mutex_pre_unlock(mu, 0);
  real();
  __tsan_mutex_post_unlock(mu, 0);
})

// Mutex: lock when a condition holds.
FERRY_TSAN_WRAP(void, _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE,
                (Mutex * mu, const Condition& c), (mu, c), {
  __tsan_mutex_pre_lock(mu, 0);
  real();
  __tsan_mutex_post_lock(mu, 0, 0);
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE,
                (Mutex * mu, const Condition& c, Duration d), (mu, c, d), {
  __tsan_mutex_pre_lock(mu, 0);
  const bool held = real();
  __tsan_mutex_post_lock(mu, 0, 0);  // locked either way
  return held;
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE,
                (Mutex * mu, const Condition& c, Time t), (mu, c, t), {
  __tsan_mutex_pre_lock(mu, 0);
  const bool held = real();
  __tsan_mutex_post_lock(mu, 0, 0);
  return held;
})
FERRY_TSAN_WRAP(void, _ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE,
                (Mutex * mu, const Condition& c), (mu, c), {
  __tsan_mutex_pre_lock(mu, kRead);
  real();
  __tsan_mutex_post_lock(mu, kRead, 0);
})

// Mutex: wait, with the lock held, until a condition holds.
FERRY_TSAN_WRAP(void, _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE,
                (Mutex * mu, const Condition& c), (mu, c), {
  Unlocked(mu);
  __tsan_mutex_pre_lock(mu, 0);
  real();
  __tsan_mutex_post_lock(mu, 0, 0);
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE,
                (Mutex * mu, const Condition& c, Duration d), (mu, c, d), {
  Unlocked(mu);
  __tsan_mutex_pre_lock(mu, 0);
  const bool held = real();
  __tsan_mutex_post_lock(mu, 0, 0);
  return held;
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE,
                (Mutex * mu, const Condition& c, Time t), (mu, c, t), {
  Unlocked(mu);
  __tsan_mutex_pre_lock(mu, 0);
  const bool held = real();
  __tsan_mutex_post_lock(mu, 0, 0);
  return held;
})

// CondVar: release the mutex, wait, take it again.
FERRY_TSAN_WRAP(void, _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE,
                (CondVar * cv, Mutex* mu), (cv, mu), {
  Unlocked(mu);
  __tsan_mutex_pre_lock(mu, 0);
  real();
  __tsan_mutex_post_lock(mu, 0, 0);
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE,
                (CondVar * cv, Mutex* mu, Duration d), (cv, mu, d), {
  Unlocked(mu);
  __tsan_mutex_pre_lock(mu, 0);
  const bool timed_out = real();
  __tsan_mutex_post_lock(mu, 0, 0);
  return timed_out;
})
FERRY_TSAN_WRAP(bool, _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE,
                (CondVar * cv, Mutex* mu, Time t), (cv, mu, t), {
  Unlocked(mu);
  __tsan_mutex_pre_lock(mu, 0);
  const bool timed_out = real();
  __tsan_mutex_post_lock(mu, 0, 0);
  return timed_out;
})

// Notification: Notify happens before a wait that sees it.
FERRY_TSAN_WRAP(void, _ZN4absl7debian312Notification6NotifyEv, (Notification * n), (n), {
  __tsan_release(n);
  __tsan_release(NotifiedYet(n));  // for the inline HasBeenNotified
  real();
})
FERRY_TSAN_WRAP(void, _ZNK4absl7debian312Notification19WaitForNotificationEv,
                (const Notification* n), (n), {
  real();
  __tsan_acquire(const_cast<Notification*>(n));
})
FERRY_TSAN_WRAP(bool,
                _ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE,
                (const Notification* n, Duration d), (n, d), {
  const bool notified = real();
  if (notified) __tsan_acquire(const_cast<Notification*>(n));
  return notified;
})
FERRY_TSAN_WRAP(bool,
                _ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE,
                (const Notification* n, Time t), (n, t), {
  const bool notified = real();
  if (notified) __tsan_acquire(const_cast<Notification*>(n));
  return notified;
})
