#include "bench/reference.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/histogram.h"
#include "base/net.h"
#include "base/status_macros.h"

namespace ferry::bench {
namespace {

constexpr size_t kChunk = 1 << 20;

absl::StatusOr<UniqueFd> Accept(int listener) {
  int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return absl::UnavailableError("accept failed");
  return UniqueFd(fd);
}

// One plain TCP stream moving `bytes` over loopback. The receiver reads
// into a reused 1 MiB buffer, or, with `into_memory`, also writes what
// arrives into a fresh memfd (pwrite), as a destination must: the floor
// that allocating guest memory puts under any migration stream.
absl::StatusOr<double> TcpGbps(uint64_t bytes, bool into_memory) {
  ASSIGN_OR_RETURN(TcpListener l, ListenTcp("127.0.0.1:0"));
  absl::Status receiver_status;
  std::thread receiver([&] {
    auto fd = Accept(l.fd.get());
    if (!fd.ok()) {
      receiver_status = fd.status();
      return;
    }
    UniqueFd mem;
    if (into_memory) {
      mem = UniqueFd(memfd_create("ferry-reference", MFD_CLOEXEC));
      if (!mem.valid() || ftruncate(mem.get(), static_cast<off_t>(bytes)) != 0) {
        receiver_status = absl::InternalError("memfd for the reference");
        return;
      }
    }
    std::vector<uint8_t> buf(kChunk);
    uint64_t got = 0;
    while (got < bytes) {
      ssize_t n = recv(fd->get(), buf.data(), buf.size(), 0);
      if (n <= 0 ||
          (into_memory && pwrite(mem.get(), buf.data(), n, static_cast<off_t>(got)) != n)) {
        receiver_status = absl::UnavailableError("receiver: connection lost");
        return;
      }
      got += n;
    }
  });
  ASSIGN_OR_RETURN(UniqueFd fd, ConnectTcp(absl::StrCat("127.0.0.1:", l.port), 5000));
  std::vector<uint8_t> buf(kChunk, 0x5a);
  const int64_t t0 = MonotonicNowNanos();
  for (uint64_t sent = 0; sent < bytes; sent += kChunk)
    RETURN_IF_ERROR(SendAll(fd.get(), buf.data(), std::min<uint64_t>(kChunk, bytes - sent)));
  receiver.join();
  const int64_t t1 = MonotonicNowNanos();
  RETURN_IF_ERROR(receiver_status);
  return bytes * 8.0 / ((t1 - t0) / 1e9) / 1e9;
}

// recv until `len` bytes arrived: a plain blocking recv, no poll.
absl::Status BlockingRecvAll(int fd, uint8_t* p, size_t len) {
  while (len > 0) {
    const ssize_t n = recv(fd, p, len, 0);
    if (n == 0) return absl::UnavailableError("connection closed by the peer");
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError("recv failed");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Keeps every core busy while alive, at SCHED_IDLE: no core halts (as
// during a migration), yet the spinners give way at once to any normal
// thread, so the exchange measured is the fastest the machine allows.
class BusyCores {
 public:
  BusyCores() {
    const unsigned n = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i)
      threads_.emplace_back([this] {
        sched_param none{};
        (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
        while (!stop_.load(std::memory_order_relaxed)) {
        }
      });
  }
  ~BusyCores() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// A 16-byte request / 4 KiB reply ping-pong on blocking sockets with
// TCP_NODELAY: the shape of a demand fetch, with nothing in between.
absl::StatusOr<HistogramSnapshot> PingPong(int samples) {
  ASSIGN_OR_RETURN(TcpListener l, ListenTcp("127.0.0.1:0"));
  std::thread server([&] {
    auto fd = Accept(l.fd.get());
    if (!fd.ok()) return;
    int one = 1;
    setsockopt(fd->get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint8_t req[16];
    std::vector<uint8_t> reply(4096, 7);
    while (BlockingRecvAll(fd->get(), req, sizeof(req)).ok())
      if (!SendAll(fd->get(), reply.data(), reply.size()).ok()) return;
  });
  LatencyHistogram h;
  {
    ASSIGN_OR_RETURN(UniqueFd fd, ConnectTcp(absl::StrCat("127.0.0.1:", l.port), 5000));
    uint8_t req[16] = {1};
    std::vector<uint8_t> reply(4096);
    for (int i = 0; i < samples + samples / 10; ++i) {  // the first 10%: warm-up
      const int64_t t0 = MonotonicNowNanos();
      RETURN_IF_ERROR(SendAll(fd.get(), req, sizeof(req)));
      RETURN_IF_ERROR(BlockingRecvAll(fd.get(), reply.data(), reply.size()));
      if (i >= samples / 10) h.Record(MonotonicNowNanos() - t0);
    }
  }
  server.join();
  return h.Snapshot();
}

}  // namespace

JsonObject ReferenceResult::ToJson() const {
  JsonObject o;
  o.Add("scenario", "reference")
      .Add("tcp_gbps", tcp_gbps)
      .Add("tcp_bytes", tcp_bytes)
      .Add("tcp_into_memory_gbps", tcp_into_memory_gbps)
      .Add("rtt_p50_us", rtt_p50_us)
      .Add("rtt_p99_us", rtt_p99_us)
      .Add("rtt_p999_us", rtt_p999_us)
      .Add("rtt_busy_p50_us", rtt_busy_p50_us)
      .Add("rtt_busy_p99_us", rtt_busy_p99_us)
      .Add("rtt_busy_p999_us", rtt_busy_p999_us)
      .Add("rtt_samples", rtt_samples)
      .Add("cores", cores);
  return o;
}

absl::StatusOr<ReferenceResult> RunReference(uint64_t tcp_bytes, int rtt_samples) {
  ReferenceResult r;
  r.tcp_bytes = tcp_bytes;
  r.cores = std::thread::hardware_concurrency();
  ASSIGN_OR_RETURN(r.tcp_gbps, TcpGbps(tcp_bytes, /*into_memory=*/false));
  ASSIGN_OR_RETURN(r.tcp_into_memory_gbps, TcpGbps(tcp_bytes, /*into_memory=*/true));
  ASSIGN_OR_RETURN(HistogramSnapshot quiet, PingPong(rtt_samples));
  r.rtt_p50_us = quiet.Percentile(50) / 1e3;
  r.rtt_p99_us = quiet.Percentile(99) / 1e3;
  r.rtt_p999_us = quiet.Percentile(99.9) / 1e3;
  r.rtt_samples = quiet.total;
  {
    BusyCores busy;
    ASSIGN_OR_RETURN(HistogramSnapshot b, PingPong(rtt_samples));
    r.rtt_busy_p50_us = b.Percentile(50) / 1e3;
    r.rtt_busy_p99_us = b.Percentile(99) / 1e3;
    r.rtt_busy_p999_us = b.Percentile(99.9) / 1e3;
  }
  return r;
}

}  // namespace ferry::bench
