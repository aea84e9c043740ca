// Bad input, one named case each: every one gets a clear error and changes
// no guest memory. The destination's cases run against a real
// DestinationSession receiving precopy (its guest memory is read back
// through a duplicate of the VM's memfd after the session dropped the VM);
// the fetch channel's against a real PageServer on loopback.
#include <dirent.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/net.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/convert.h"
#include "migration/destination_session.h"
#include "migration/fetch/page_server.h"
#include "migration/fetch/wire.h"
#include "migration/page_frame.h"
#include "tests/migration/frame_builder.h"

namespace ferry::migration {
namespace {

using ::ferry::migration::testing::RawFrame;
using ::ferry::migration::testing::RawRun;
using ::ferry::migration::testing::Split;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using ferry::v1::DestinationMessage;
using ferry::v1::SourceMessage;

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 256;

class Sink final : public DestinationSink {
 public:
  bool Send(const DestinationMessage& m) override {
    absl::MutexLock lock(&mu_);
    written.push_back(m);
    return true;
  }
  void Finish(const absl::Status&) override {}
  std::string LastError() {
    absl::MutexLock lock(&mu_);
    for (auto it = written.rbegin(); it != written.rend(); ++it)
      if (it->has_error()) return it->error().message();
    return "";
  }
  absl::Mutex mu_;
  std::vector<DestinationMessage> written;
};

std::string Control(const SourceMessage& m) { return EncodeControlFrame(m); }

SourceMessage Hello(const std::string& token = "token") {
  vmm::VmConfig c;
  c.memory_bytes = kPages * kPage;
  c.vcpus = 1;
  c.workload.kind = vmm::WorkloadKind::kSequential;
  SourceMessage m;
  ferry::v1::Hello* h = m.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_migration_id("m1");
  h->set_auth_token(token);
  *h->mutable_layout() = ToLayout(c, *vmm::MemoryMap::ForSize(c.memory_bytes, kPage));
  h->set_mode(ferry::v1::MIGRATION_MODE_PRECOPY);  // no fetch channel dialled
  h->set_fault_mode(ferry::v1::FAULT_MODE_EXIT);
  h->set_fetch_address("127.0.0.1:1");
  h->set_fetch_secret(std::string(32, 's'));
  h->set_data_streams(1);
  return m;
}

// The newest guest memfd of this process, duplicated.
int DupGuestMemfd() {
  int newest = -1;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) {
    char target[256] = {};
    const std::string link = absl::StrCat("/proc/self/fd/", e->d_name);
    if (readlink(link.c_str(), target, sizeof(target) - 1) <= 0) continue;
    if (std::string(target).find("memfd:ferry-guest-ram") == std::string::npos) continue;
    newest = std::max(newest, atoi(e->d_name));
  }
  closedir(d);
  return newest < 0 ? -1 : dup(newest);
}

// A destination receiving precopy that holds pages 0-3 (filled with 'a').
class MalformedDestinationInput : public ::testing::Test {
 protected:
  void SetUp() override {
    DestinationOptions options;
    options.expected_token = "token";
    session_ = std::make_unique<DestinationSession>(options, &sink_);
    ASSERT_TRUE(session_->OnReceive(Split(Control(Hello()), 1000)));
    ASSERT_TRUE(session_->OnReceive(Split(RawFrame::Data(0, 4, 'a').Bytes(), 1000)));
    memfd_ = DupGuestMemfd();
    ASSERT_GE(memfd_, 0);
  }
  void TearDown() override {
    if (session_->state() != DestinationState::kFailed) session_->OnStreamLost();
    session_.reset();
    if (memfd_ >= 0) close(memfd_);
  }

  // `wire` ends the migration with `code` and an error naming `what`; the
  // guest memory is as before it.
  void ExpectRefused(const std::string& wire, absl::StatusCode code, const std::string& what) {
    EXPECT_FALSE(session_->OnReceive(Split(wire, 777)));
    EXPECT_THAT(session_->Wait(), StatusIs(code, HasSubstr(what)));
    EXPECT_THAT(sink_.LastError(), HasSubstr(what)) << "the source is told why";
    EXPECT_EQ(session_->vm(), nullptr) << "the destination keeps nothing";
    ExpectMemoryUnchanged();
  }

  void ExpectMemoryUnchanged() {
    void* p = mmap(nullptr, kPages * kPage, PROT_READ, MAP_SHARED, memfd_, 0);
    ASSERT_NE(p, MAP_FAILED);
    const auto* mem = static_cast<const uint8_t*>(p);
    uint64_t changed = 0;
    for (uint64_t i = 0; i < kPages * kPage; ++i)
      changed += mem[i] != (i < 4 * kPage ? 'a' : 0);
    munmap(p, kPages * kPage);
    EXPECT_EQ(changed, 0u) << "bytes of guest memory changed by bad input";
  }

  Sink sink_;
  std::unique_ptr<DestinationSession> session_;
  int memfd_ = -1;
};

TEST_F(MalformedDestinationInput, TruncatedFrame) {
  RawFrame f = RawFrame::Data(5, 2, 'z');
  f.runs[0].data.resize(kPage + kPage / 2);
  ExpectRefused(f.Bytes(), absl::StatusCode::kInvalidArgument, "truncated");
}

TEST_F(MalformedDestinationInput, UnknownType) {
  ExpectRefused(std::string("\x07garbage", 8), absl::StatusCode::kInvalidArgument,
                "unknown frame kind 7");
}

TEST_F(MalformedDestinationInput, BadMagicOfAPageFrame) {
  RawFrame f = RawFrame::Data(5, 1, 'z');
  f.phase = 9;  // the frame's own header check (the kind byte is the stream's magic)
  ExpectRefused(f.Bytes(), absl::StatusCode::kInvalidArgument, "phase");
}

TEST_F(MalformedDestinationInput, OversizeLength) {
  RawFrame f = RawFrame::Data(5, 1, 'z');
  f.zero_bitmap = std::string(64, '\0');
  std::string wire = f.Bytes();
  wire[24] = wire[25] = wire[26] = '\xff';  // the bitmap claims 16 MiB
  wire[27] = 0;
  ExpectRefused(wire, absl::StatusCode::kInvalidArgument, "larger than the VM's address space");
}

TEST_F(MalformedDestinationInput, OversizeRunCount) {
  RawFrame f = RawFrame::Data(5, 1, 'z');
  f.run_count_delta = 1 << 20;
  ExpectRefused(f.Bytes(), absl::StatusCode::kInvalidArgument, "more than 4096 pages");
}

TEST_F(MalformedDestinationInput, GpaOutOfRange) {
  // A good run first: nothing of the frame may be installed.
  RawFrame f = RawFrame::Data(5, 1, 'z');
  f.runs.push_back({uint64_t{1} << 40, 1, std::string(kPage, 'y')});
  ExpectRefused(f.Bytes(), absl::StatusCode::kOutOfRange, "is not inside one RAM slot");
}

TEST_F(MalformedDestinationInput, PageCountPastTheEndOfMemory) {
  RawFrame f = RawFrame::Data(5, 1, 'z');
  f.runs.push_back({250 * kPage, 10, std::string(10 * kPage, 'y')});
  ExpectRefused(f.Bytes(), absl::StatusCode::kOutOfRange, "is not inside one RAM slot");
}

TEST_F(MalformedDestinationInput, MessageOutOfOrder) {
  SourceMessage complete;
  complete.mutable_complete()->set_pages_pushed(1);
  ExpectRefused(Control(complete), absl::StatusCode::kFailedPrecondition,
                "Complete is not expected while the destination is receiving precopy");
}

TEST_F(MalformedDestinationInput, DuplicateHello) {
  ExpectRefused(Control(Hello()), absl::StatusCode::kFailedPrecondition,
                "Hello is not expected");
}

TEST_F(MalformedDestinationInput, WrongMigrationIdOnADataStream) {
  ferry::v1::Join join;
  join.set_migration_id("m2");
  join.set_auth_token("token");
  join.set_index(1);
  EXPECT_THAT(session_->Attach(join), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("cannot join migration m1")));
  join.set_migration_id("m1");
  join.set_auth_token("nope");
  EXPECT_THAT(session_->Attach(join), StatusIs(absl::StatusCode::kUnauthenticated));
  ExpectMemoryUnchanged();
}

TEST(MalformedHello, WrongToken) {
  Sink sink;
  DestinationOptions options;
  options.expected_token = "token";
  DestinationSession session(options, &sink);
  EXPECT_FALSE(session.OnReceive(Split(Control(Hello("stolen")), 1000)));
  EXPECT_THAT(session.Wait(),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("wrong migration token")));
  EXPECT_EQ(session.vm(), nullptr) << "no VM is created for a wrong token";
}

// The fetch channel, by hand against a real page server.
class MalformedFetchInput : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_ = vmm::GuestMemory::Create(*vmm::MemoryMap::ForSize(kPages * kPage, kPage)).value();
    secret_.fill(9);
    server_ = fetch::PageServer::Start("127.0.0.1:0").value();
    served_ = std::make_shared<fetch::ServedMigration>(
        "m1", secret_, memory_.get(), [this](uint64_t, uint32_t n) { served_pages_ += n; });
    served_->EnableServing();
    server_->Register(served_);
    fd_ = ConnectTcp(absl::StrCat("127.0.0.1:", server_->port()), 2000).value();
    uint8_t sh[fetch::kServerHelloSize];
    ASSERT_OK(RecvAll(fd_.get(), sh, sizeof(sh), 2000));
    nonce_ = fetch::DecodeServerHello(sh).value().nonce;
  }
  // Sends a client hello (bytes as given); the server's result.
  fetch::WireStatus Handshake(uint8_t* hello) {
    EXPECT_OK(SendAll(fd_.get(), hello, fetch::kClientHelloSize));
    uint8_t r[fetch::kHelloResultSize];
    EXPECT_OK(RecvAll(fd_.get(), r, sizeof(r), 2000));
    return fetch::DecodeHelloResult(r).value().status;
  }
  fetch::WireStatus GoodHandshake(const std::string& id = "m1") {
    uint8_t ch[fetch::kClientHelloSize];
    fetch::Encode(fetch::ClientHello{id, fetch::ComputeProof(secret_, nonce_, id)}, ch);
    return Handshake(ch);
  }
  bool Closed() {
    uint8_t b;
    return !RecvAll(fd_.get(), &b, 1, 2000).ok();
  }
  // A request's reply status.
  fetch::WireStatus Ask(uint64_t gpa, uint8_t count) {
    uint8_t req[fetch::kRequestSize];
    fetch::Encode(fetch::Request{1, count, gpa}, req);
    EXPECT_OK(SendAll(fd_.get(), req, sizeof(req)));
    uint8_t h[fetch::kReplyHeaderSize];
    EXPECT_OK(RecvAll(fd_.get(), h, sizeof(h), 2000));
    return fetch::DecodeReplyHeader(h, kPage).value().status;
  }

  std::unique_ptr<vmm::GuestMemory> memory_;
  fetch::Secret secret_;
  fetch::Nonce nonce_;
  std::unique_ptr<fetch::PageServer> server_;
  std::shared_ptr<fetch::ServedMigration> served_;
  std::atomic<uint64_t> served_pages_{0};
  UniqueFd fd_;
};

TEST_F(MalformedFetchInput, BadMagic) {
  uint8_t ch[fetch::kClientHelloSize];
  fetch::Encode(fetch::ClientHello{"m1", fetch::ComputeProof(secret_, nonce_, "m1")}, ch);
  std::memcpy(ch, "EVIL", 4);
  EXPECT_EQ(Handshake(ch), fetch::WireStatus::kBadRequest);
  EXPECT_TRUE(Closed());
  EXPECT_EQ(served_pages_.load(), 0u);
}

TEST_F(MalformedFetchInput, WrongToken) {
  uint8_t ch[fetch::kClientHelloSize];
  fetch::Secret wrong = secret_;
  wrong[0] ^= 1;
  fetch::Encode(fetch::ClientHello{"m1", fetch::ComputeProof(wrong, nonce_, "m1")}, ch);
  EXPECT_EQ(Handshake(ch), fetch::WireStatus::kBadProof);
  EXPECT_TRUE(Closed());
}

TEST_F(MalformedFetchInput, WrongMigrationId) {
  EXPECT_EQ(GoodHandshake("m2"), fetch::WireStatus::kUnknownMigration);
  EXPECT_TRUE(Closed());
}

TEST_F(MalformedFetchInput, UnknownType) {
  ASSERT_EQ(GoodHandshake(), fetch::WireStatus::kOk);
  uint8_t req[fetch::kRequestSize];
  fetch::Encode(fetch::Request{1, 1, 0}, req);
  req[4] = 9;  // not a request
  ASSERT_OK(SendAll(fd_.get(), req, sizeof(req)));
  EXPECT_TRUE(Closed());
  EXPECT_EQ(server_->Stats().malformed_frames, 1u);
  EXPECT_EQ(served_pages_.load(), 0u);
}

TEST_F(MalformedFetchInput, OversizeLength) {
  ASSERT_EQ(GoodHandshake(), fetch::WireStatus::kOk);
  uint8_t req[fetch::kRequestSize];
  fetch::Encode(fetch::Request{1, 1, 0}, req);
  req[5] = fetch::kMaxPagesPerRequest + 1;  // more pages than a request may ask
  ASSERT_OK(SendAll(fd_.get(), req, sizeof(req)));
  EXPECT_TRUE(Closed());
  EXPECT_EQ(served_pages_.load(), 0u);
}

TEST_F(MalformedFetchInput, GpaOutOfRangeAndPastTheEnd) {
  ASSERT_EQ(GoodHandshake(), fetch::WireStatus::kOk);
  EXPECT_EQ(Ask(uint64_t{1} << 40, 1), fetch::WireStatus::kOutOfRange);
  EXPECT_EQ(Ask(250 * kPage, 10), fetch::WireStatus::kOutOfRange);
  EXPECT_EQ(Ask(3, 1), fetch::WireStatus::kOutOfRange) << "unaligned";
  EXPECT_EQ(served_pages_.load(), 0u);
  EXPECT_EQ(Ask(0, 1), fetch::WireStatus::kOk) << "the connection still serves good requests";
}

TEST_F(MalformedFetchInput, TruncatedFrame) {
  ASSERT_EQ(GoodHandshake(), fetch::WireStatus::kOk);
  uint8_t req[fetch::kRequestSize];
  fetch::Encode(fetch::Request{1, 1, 0}, req);
  ASSERT_OK(SendAll(fd_.get(), req, 7));  // then the peer goes away
  shutdown(fd_.get(), SHUT_WR);
  EXPECT_TRUE(Closed());
  EXPECT_EQ(served_pages_.load(), 0u);
}

}  // namespace
}  // namespace ferry::migration
