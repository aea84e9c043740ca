// Fuzz target: the destination's message handler (DestinationSession, the
// code behind ferry.v1.Migration on the receiving agent). Each input is a
// Hello built here (precopy, so no fetch channel is dialled) followed by the
// input's messages: each one a 2-byte little-endian length and that many
// bytes, handed to OnReceive as received (kind byte included), cut into
// slices at the length's low bits. Whatever arrives, the session must end
// exactly once, finish its stream once, and a failed migration must leave
// nothing behind (no VM).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "migration/convert.h"
#include "migration/destination_session.h"
#include "migration/page_frame.h"
#include "migration/protocol.h"

namespace {

using ferry::v1::DestinationMessage;

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "destination_fuzzer: %s\n", what);
    abort();
  }
}

class Sink final : public ferry::migration::DestinationSink {
 public:
  bool Send(const DestinationMessage&) override { return true; }
  void Finish(const absl::Status&) override {
    absl::MutexLock lock(&mu_);
    ++finished;
  }
  absl::Mutex mu_;
  int finished = 0;
};

std::string HelloFrame() {
  ferry::vmm::VmConfig c;
  c.memory_bytes = 64 * 4096;
  c.vcpus = 1;
  c.workload.kind = ferry::vmm::WorkloadKind::kSequential;
  ferry::v1::SourceMessage m;
  ferry::v1::Hello* h = m.mutable_hello();
  h->set_protocol_version(ferry::migration::kProtocolVersion);
  h->set_migration_id("fuzz");
  h->set_auth_token("token");
  *h->mutable_layout() =
      ferry::migration::ToLayout(c, *ferry::vmm::MemoryMap::ForSize(c.memory_bytes, 4096));
  h->set_mode(ferry::v1::MIGRATION_MODE_PRECOPY);
  h->set_fault_mode(ferry::v1::FAULT_MODE_EXIT);
  h->set_fetch_address("127.0.0.1:1");
  h->set_fetch_secret(std::string(32, 's'));
  return ferry::migration::EncodeControlFrame(m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::migration;  // NOLINT: a fuzz target
  static const std::string hello = HelloFrame();
  Sink sink;
  {
    DestinationOptions options;
    options.expected_token = "token";
    DestinationSession session(options, &sink);
    const absl::Span<const uint8_t> h(reinterpret_cast<const uint8_t*>(hello.data()),
                                      hello.size());
    bool more = session.OnReceive(absl::MakeConstSpan(&h, 1));
    Check(more, "the built Hello is accepted");
    size_t at = 0;
    while (more && at + 2 <= size) {
      const size_t len = std::min<size_t>(data[at] | (data[at + 1] << 8), size - at - 2);
      const size_t piece = 1 + (data[at] & 0x3f) * 97;
      at += 2;
      std::vector<absl::Span<const uint8_t>> spans;
      for (size_t i = 0; i < len; i += piece)
        spans.emplace_back(data + at + i, std::min(piece, len - i));
      if (spans.empty()) spans.emplace_back(data + at, 0);
      more = session.OnReceive(spans);
      at += len;
    }
    if (more) (void)session.OnStreamLost();
    const absl::Status end = session.Wait();
    if (!end.ok()) Check(session.vm() == nullptr, "a failed migration keeps no VM");
  }
  Check(sink.finished == 1, "the stream is finished exactly once");
  return 0;
}
