// Fuzz target: the fetch channel's wire (migration/fetch/wire.h) and the
// page server's handling of requests. The first byte picks what the rest
// is: a server hello, a client hello (decoded, then its proof checked as
// the server does), a hello result, a stream of requests (each decoded and,
// when valid, served from a small VM's memory: the reply must decode and
// answer its request, and serving must never change guest memory), or a
// reply header. A decoded frame must encode back to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "migration/fetch/page_server.h"
#include "migration/fetch/wire.h"
#include "vmm/digest.h"
#include "vmm/guest_memory.h"

namespace {

using namespace ferry::migration::fetch;  // NOLINT: a fuzz target

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 64;

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "fetch_wire_fuzzer: %s\n", what);
    abort();
  }
}

struct Fixture {
  std::unique_ptr<ferry::vmm::GuestMemory> memory;
  std::shared_ptr<ServedMigration> served;
  uint64_t digest = 0;
  Fixture() {
    memory = ferry::vmm::GuestMemory::Create(*ferry::vmm::MemoryMap::ForSize(kPages * kPage, kPage))
                 .value();
    for (uint64_t p = 0; p < kPages; p += 2)
      std::memset(memory->host() + p * kPage, static_cast<int>(p + 1), kPage);
    Secret secret;
    secret.fill(7);
    served = std::make_shared<ServedMigration>("fuzz", secret, memory.get(), nullptr);
    served->EnableServing();
    digest = ferry::vmm::DigestMemory(*memory).value().digest;
  }
};

Fixture& F() {
  static Fixture* f = new Fixture();
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const absl::Span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      auto h = DecodeServerHello(in);
      if (h.ok()) {
        uint8_t out[kServerHelloSize];
        Encode(*h, out);
        Check(std::memcmp(out, in.data(), kServerHelloSize) == 0, "server hello re-encodes");
      }
      break;
    }
    case 1: {
      auto h = DecodeClientHello(in);
      if (h.ok()) {
        Check(h->migration_id.size() <= kMaxMigrationIdSize, "client hello id bounded");
        Nonce nonce;
        nonce.fill(3);
        Secret secret;
        secret.fill(7);
        (void)ProofEquals(h->proof, ComputeProof(secret, nonce, h->migration_id));
      }
      break;
    }
    case 2:
      (void)DecodeHelloResult(in);
      break;
    case 3: {
      Fixture& f = F();
      for (size_t at = 0; at + kRequestSize <= in.size(); at += kRequestSize) {
        auto req = DecodeRequest(in.subspan(at, kRequestSize));
        if (!req.ok()) break;  // the server closes the connection here
        uint8_t again[kRequestSize];
        Encode(*req, again);
        Check(std::memcmp(again, in.data() + at, kRequestSize) == 0, "request re-encodes");
        std::vector<uint8_t> out;
        f.served->Serve(*req, &out);
        Check(out.size() >= kReplyHeaderSize, "a reply has its header");
        auto reply = DecodeReplyHeader(absl::MakeConstSpan(out.data(), kReplyHeaderSize), kPage);
        Check(reply.ok(), "the server's reply decodes");
        Check(MatchReply(*reply, *req).ok(), "the reply answers its request");
        Check(out.size() == kReplyHeaderSize + reply->data_len, "the reply's length is exact");
      }
      Check(ferry::vmm::DigestMemory(*f.memory).value().digest == f.digest,
            "serving never changes guest memory");
      break;
    }
    case 4: {
      auto h = DecodeReplyHeader(in, kPage);
      if (h.ok()) {
        Check(h->data_len <= static_cast<uint64_t>(kMaxPagesPerRequest) * kPage,
              "reply data bounded");
        uint8_t out[kReplyHeaderSize];
        Encode(*h, out);
        Check(std::memcmp(out, in.data(), kReplyHeaderSize) == 0, "reply header re-encodes");
      }
      break;
    }
  }
  return 0;
}
