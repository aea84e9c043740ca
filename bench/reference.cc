#include "bench/reference.h"

#include <sys/socket.h>

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

absl::StatusOr<double> TcpGbps(uint64_t bytes) {
  ASSIGN_OR_RETURN(TcpListener l, ListenTcp("127.0.0.1:0"));
  absl::Status receiver_status;
  std::thread receiver([&] {
    auto fd = Accept(l.fd.get());
    if (!fd.ok()) {
      receiver_status = fd.status();
      return;
    }
    std::vector<uint8_t> buf(kChunk);
    uint64_t got = 0;
    while (got < bytes) {
      ssize_t n = recv(fd->get(), buf.data(), buf.size(), 0);
      if (n <= 0) {
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

absl::StatusOr<HistogramSnapshot> PingPong(int samples) {
  ASSIGN_OR_RETURN(TcpListener l, ListenTcp("127.0.0.1:0"));
  std::thread server([&] {
    auto fd = Accept(l.fd.get());
    if (!fd.ok()) return;
    uint8_t req[16];
    std::vector<uint8_t> reply(4096, 7);
    while (RecvAll(fd->get(), req, sizeof(req), 10000).ok())
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
      RETURN_IF_ERROR(RecvAll(fd.get(), reply.data(), reply.size(), 10000));
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
      .Add("rtt_p50_us", rtt_p50_us)
      .Add("rtt_p99_us", rtt_p99_us)
      .Add("rtt_p999_us", rtt_p999_us)
      .Add("rtt_samples", rtt_samples);
  return o;
}

absl::StatusOr<ReferenceResult> RunReference(uint64_t tcp_bytes, int rtt_samples) {
  ReferenceResult r;
  r.tcp_bytes = tcp_bytes;
  ASSIGN_OR_RETURN(r.tcp_gbps, TcpGbps(tcp_bytes));
  ASSIGN_OR_RETURN(HistogramSnapshot h, PingPong(rtt_samples));
  r.rtt_p50_us = h.Percentile(50) / 1e3;
  r.rtt_p99_us = h.Percentile(99) / 1e3;
  r.rtt_p999_us = h.Percentile(99.9) / 1e3;
  r.rtt_samples = h.total;
  return r;
}

}  // namespace ferry::bench
