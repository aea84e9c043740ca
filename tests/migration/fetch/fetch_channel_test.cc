// The fetch channel end to end on loopback: a real PageServer and real
// RemotePageSources over TCP and io_uring.
#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/net.h"
#include "base/clock.h"
#include "base/eventually.h"
#include "base/socket_testing.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/fetch/remote_page_source.h"
#include "migration/fetch/page_server.h"
#include "migration/fetch/seal.h"
#include "vmm/guest_memory.h"

namespace ferry::migration::fetch {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 256;

class FetchChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_ = std::move(vmm::GuestMemory::Create(
                            *vmm::MemoryMap::ForSize(kPages * kPage, kPage)))
                  .value();
    for (uint64_t p = 0; p < kPages; ++p)
      if (p % 4 != 3) std::memset(memory_->host() + p * kPage, int(p % 251) + 1, kPage);
    ASSERT_OK(RandomBytes(absl::MakeSpan(secret_)));
    ASSERT_OK_AND_ASSIGN(server_, PageServer::Start("127.0.0.1:0"));
    migration_ = std::make_shared<ServedMigration>(
        "m1", secret_, memory_.get(), [this](uint64_t gpa, uint32_t count) {
          served_pages_ += count;
        });
    server_->Register(migration_);
  }

  FetcherOptions Options() {
    FetcherOptions o;
    o.address = absl::StrCat("127.0.0.1:", server_->port());
    o.migration_id = "m1";
    o.secret = secret_;
    return o;
  }

  std::unique_ptr<vmm::GuestMemory> memory_;
  Secret secret_{};
  std::unique_ptr<PageServer> server_;
  std::shared_ptr<ServedMigration> migration_;
  std::atomic<uint64_t> served_pages_{0};
};

TEST_F(FetchChannelTest, FetchesDataAndZeroPages) {
  migration_->EnableServing();
  RemotePageSource source(Options());
  std::vector<uint8_t> buf(kPage);
  ASSERT_OK_AND_ASSIGN(vmm::FetchedPage page, source.Fetch(5 * kPage, absl::MakeSpan(buf)));
  EXPECT_EQ(page.content, vmm::PageContent::kData);
  EXPECT_EQ(std::memcmp(page.data, memory_->host() + 5 * kPage, kPage), 0);
  ASSERT_OK_AND_ASSIGN(page, source.Fetch(3 * kPage, absl::MakeSpan(buf)));
  EXPECT_EQ(page.content, vmm::PageContent::kZero);
  FetcherStats s = source.Stats();
  EXPECT_EQ(s.requests, 2u);
  EXPECT_EQ(s.lanes, 1u);
  EXPECT_EQ(served_pages_.load(), 2u);
  // The server's part of each fetch is timed once its reply is sent (the
  // send's completion may reach the server thread after the reply arrived).
  EXPECT_TRUE(Eventually([&] { return migration_->service_time().total == 2; }));
  EXPECT_GT(migration_->service_time().max, 0u);
}

// A TCP relay in front of the page server that can cut every connection
// (as `ss -K` does) and stay down for a while.
class CuttableRelay {
 public:
  explicit CuttableRelay(int target_port) : target_port_(target_port) {
    auto l = ListenTcp("127.0.0.1:0");
    EXPECT_TRUE(l.ok());
    listener_ = std::move(l->fd);
    port_ = l->port;
    acceptor_ = std::thread([this] {
      while (true) {
        int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        absl::MutexLock lock(&mu_);
        if (down_) {
          ::close(fd);
          continue;
        }
        auto up = ConnectTcp(absl::StrCat("127.0.0.1:", target_port_), 1000);
        if (!up.ok()) {
          ::close(fd);
          continue;
        }
        int a = fd, b = up->Release();
        fds_.push_back(a);
        fds_.push_back(b);
        pumps_.emplace_back(Pump, a, b);
        pumps_.emplace_back(Pump, b, a);
      }
    });
  }
  ~CuttableRelay() {
    ::shutdown(listener_.get(), SHUT_RDWR);
    acceptor_.join();
    Cut(false);
    for (std::thread& t : pumps_) t.join();
  }
  int port() const { return port_; }
  // Cuts every connection; while `down`, new ones are closed at once.
  void Cut(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  void Up() {
    absl::MutexLock lock(&mu_);
    down_ = false;
  }

 private:
  static void Pump(int from, int to) {
    char buf[65536];
    while (true) {
      ssize_t n = recv(from, buf, sizeof(buf), 0);
      if (n <= 0 || !SendAll(to, buf, n).ok()) break;
    }
    ::shutdown(to, SHUT_RDWR);
  }
  const int target_port_;
  UniqueFd listener_;
  int port_ = 0;
  std::thread acceptor_;
  absl::Mutex mu_;
  bool down_ = false;
  std::vector<int> fds_;
  std::vector<std::thread> pumps_;
};

TEST_F(FetchChannelTest, AFetchSurvivesABrokenChannel) {
  // Every fetch connection is cut and stays down for 200 ms: a fetch in
  // between retries on new connections and gets its page; the vCPU it
  // serves would never have failed.
  migration_->EnableServing();
  CuttableRelay relay(server_->port());
  FetcherOptions o = Options();
  o.address = absl::StrCat("127.0.0.1:", relay.port());
  RemotePageSource source(o);
  std::vector<uint8_t> buf(kPage);
  ASSERT_OK(source.Fetch(5 * kPage, absl::MakeSpan(buf)).status());
  relay.Cut(/*down=*/true);
  // Up again once the fetch has retried at least once (not after a fixed
  // time: a loaded machine may start the fetch late).
  std::thread back([&] {
    EXPECT_TRUE(Eventually([&] { return source.Stats().retries > 0; }));
    relay.Up();
  });
  ASSERT_OK_AND_ASSIGN(vmm::FetchedPage page, source.Fetch(6 * kPage, absl::MakeSpan(buf)));
  back.join();
  EXPECT_EQ(page.content, vmm::PageContent::kData);
  EXPECT_EQ(std::memcmp(page.data, memory_->host() + 6 * kPage, kPage), 0);
  EXPECT_GT(source.Stats().retries, 0u);
  EXPECT_GE(source.Stats().lanes, 2u);
  // A batch (blocking mode's path) survives a cut the same way.
  relay.Cut(/*down=*/true);
  const uint64_t retries_before = source.Stats().retries;
  std::thread back2([&] {
    EXPECT_TRUE(Eventually([&] { return source.Stats().retries > retries_before; }));
    relay.Up();
  });
  std::vector<uint64_t> seen;
  ASSERT_OK(source.FetchRuns({{20 * kPage, 4}}, kPage,
                             [&](uint64_t gpa, const vmm::FetchedPage&) {
                               seen.push_back(gpa / kPage);
                               return absl::OkStatus();
                             }));
  back2.join();
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  EXPECT_EQ(seen, (std::vector<uint64_t>{20, 21, 22, 23}));
}

TEST_F(FetchChannelTest, CloseEndsTheRetries) {
  // Nothing listens any more: the fetch retries until Close() (the
  // migration failed), then fails at once, naming the closed channel.
  migration_->EnableServing();
  FetcherOptions o = Options();
  server_.reset();
  RemotePageSource source(o);
  std::thread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    source.Close();
  });
  std::vector<uint8_t> buf(kPage);
  const int64_t t0 = MonotonicNowNanos();
  EXPECT_THAT(source.Fetch(5 * kPage, absl::MakeSpan(buf)).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed")));
  closer.join();
  EXPECT_LT(MonotonicNowNanos() - t0, 20'000'000'000) << "Close() must end the retries";
}

TEST_F(FetchChannelTest, ARefusalIsNotRetried) {
  // An unknown migration is a refusal, not a break: it fails at once.
  FetcherOptions o = Options();
  o.migration_id = "m2";
  RemotePageSource source(o);
  std::vector<uint8_t> buf(kPage);
  EXPECT_THAT(source.Fetch(5 * kPage, absl::MakeSpan(buf)).status(),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(source.Stats().retries, 0u);
}

TEST_F(FetchChannelTest, BatchesHaveEveryRequestInFlightAndDeliverEachPage) {
  migration_->EnableServing();
  RemotePageSource source(Options());
  // 40 pages (two requests: 32 + 8), one page, three pages; zero pages
  // (every fourth) among them; then 40 single pages (two rounds in flight).
  std::vector<vmm::PageRunRequest> runs = {{0, 40}, {100 * kPage, 1}, {200 * kPage, 3}};
  for (uint64_t p = 0; p < 40; ++p) runs.push_back({(60 + p * 2) * kPage, 1});
  std::vector<uint64_t> seen;
  ASSERT_OK(source.FetchRuns(runs, kPage,
                             [&](uint64_t gpa, const vmm::FetchedPage& page) -> absl::Status {
                               const uint64_t p = gpa / kPage;
                               EXPECT_EQ(page.content == vmm::PageContent::kZero, p % 4 == 3)
                                   << "page " << p;
                               if (page.content == vmm::PageContent::kData)
                                 EXPECT_EQ(std::memcmp(page.data, memory_->host() + gpa, kPage), 0)
                                     << "page " << p;
                               seen.push_back(p);
                               return absl::OkStatus();
                             }));
  ASSERT_EQ(seen.size(), 84u);
  EXPECT_EQ(seen[0], 0u);
  EXPECT_EQ(seen[40], 100u);
  EXPECT_EQ(seen[41], 200u);
  EXPECT_EQ(source.Stats().requests, 4u + 40u);
  EXPECT_EQ(source.Stats().lanes, 1u);
  EXPECT_EQ(served_pages_.load(), 84u);
  // The lane is still in step: a plain fetch works after the batch.
  std::vector<uint8_t> buf(kPage);
  EXPECT_OK(source.Fetch(7 * kPage, absl::MakeSpan(buf)).status());
}

TEST_F(FetchChannelTest, ABatchStopsAtTheFirstErrorAndTheNextBatchWorks) {
  migration_->EnableServing();
  RemotePageSource source(Options());
  int delivered = 0;
  auto count = [&](uint64_t, const vmm::FetchedPage&) -> absl::Status {
    ++delivered;
    return absl::OkStatus();
  };
  std::vector<vmm::PageRunRequest> bad = {{0, 2}, {kPages * kPage, 1}, {10 * kPage, 1}};
  EXPECT_THAT(source.FetchRuns(bad, kPage, count),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("outside")));
  EXPECT_EQ(delivered, 2);
  // A callback's error stops the batch too.
  EXPECT_THAT(source.FetchRuns({{0, 4}}, kPage,
                               [](uint64_t, const vmm::FetchedPage&) {
                                 return absl::InternalError("install failed");
                               }),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("install failed")));
  delivered = 0;
  ASSERT_OK(source.FetchRuns({{20 * kPage, 5}}, kPage, count));  // a fresh lane
  EXPECT_EQ(delivered, 5);
}

TEST_F(FetchChannelTest, RequestsBeforePostcopyAreRefused) {
  RemotePageSource source(Options());
  std::vector<uint8_t> buf(kPage);
  EXPECT_THAT(source.Fetch(0, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not in postcopy")));
  migration_->EnableServing();
  EXPECT_OK(source.Fetch(0, absl::MakeSpan(buf)).status());  // same lane, now served
}

TEST_F(FetchChannelTest, OutOfRangeGpaIsRefusedAndNothingIsServed) {
  migration_->EnableServing();
  RemotePageSource source(Options());
  std::vector<uint8_t> buf(kPage);
  EXPECT_THAT(source.Fetch(kPages * kPage, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("outside the source")));
  EXPECT_EQ(served_pages_.load(), 0u);
}

TEST_F(FetchChannelTest, WrongSecretIsRefusedAtHandshake) {
  migration_->EnableServing();
  FetcherOptions o = Options();
  o.secret[0] ^= 1;
  RemotePageSource source(o);
  std::vector<uint8_t> buf(kPage);
  EXPECT_THAT(source.Fetch(0, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("proof")));
  EXPECT_EQ(server_->Stats().handshakes_failed, 1u);
  EXPECT_EQ(served_pages_.load(), 0u);
}

TEST_F(FetchChannelTest, UnknownMigrationIsRefusedAtHandshake) {
  FetcherOptions o = Options();
  o.migration_id = "m2";
  RemotePageSource source(o);
  std::vector<uint8_t> buf(kPage);
  EXPECT_THAT(source.Fetch(0, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(FetchChannelTest, MalformedFrameClosesTheConnection) {
  migration_->EnableServing();
  // Speak the protocol by hand: a correct handshake, then garbage.
  ASSERT_OK_AND_ASSIGN(UniqueFd fd,
                       ConnectTcp(absl::StrCat("127.0.0.1:", server_->port()), 2000));
  uint8_t sh[kServerHelloSize];
  ASSERT_OK(RecvAll(fd.get(), sh, sizeof(sh), 2000));
  ASSERT_OK_AND_ASSIGN(ServerHello hello, DecodeServerHello(sh));
  uint8_t ch[kClientHelloSize];
  Encode(ClientHello{"m1", ComputeProof(secret_, hello.nonce, "m1")}, ch);
  ASSERT_OK(SendAll(fd.get(), ch, sizeof(ch)));
  uint8_t hr[kHelloResultSize];
  ASSERT_OK(RecvAll(fd.get(), hr, sizeof(hr), 2000));
  uint8_t garbage[kRequestSize] = {1, 2, 3, 4, 99};
  ASSERT_OK(SendAll(fd.get(), garbage, sizeof(garbage)));
  uint8_t byte;
  EXPECT_THAT(RecvAll(fd.get(), &byte, 1, 2000),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed")));
  EXPECT_EQ(server_->Stats().malformed_frames, 1u);
  EXPECT_EQ(served_pages_.load(), 0u);
}

TEST_F(FetchChannelTest, ConcurrentFaultsOnOnePageShareOneRequest) {
  migration_->EnableServing();
  RemotePageSource source(Options());
  constexpr int kThreads = 8;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int round = 0; round < 50; ++round) {
    threads.clear();
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, round] {
        std::vector<uint8_t> buf(kPage);
        auto page = source.Fetch(uint64_t(round) * kPage, absl::MakeSpan(buf));
        if (page.ok() &&
            (page->content == vmm::PageContent::kZero
                 ? round % 4 == 3
                 : std::memcmp(page->data, memory_->host() + round * kPage, kPage) == 0))
          ++ok;
      });
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(ok.load(), 50 * kThreads);
  FetcherStats s = source.Stats();
  EXPECT_EQ(s.requests + s.shared, 50u * kThreads);
  EXPECT_GT(s.shared, 0u) << "no fault ever shared another's request";
  EXPECT_EQ(served_pages_.load(), s.requests);
}

TEST_F(FetchChannelTest, CloseFailsLaterFetchesAndUnregisterStopsServing) {
  migration_->EnableServing();
  RemotePageSource source(Options());
  std::vector<uint8_t> buf(kPage);
  ASSERT_OK(source.Fetch(0, absl::MakeSpan(buf)).status());
  server_->Unregister("m1");
  EXPECT_THAT(source.Fetch(kPage, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kNotFound));
  source.Close();
  EXPECT_THAT(source.Fetch(kPage, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(FetchChannelTest, ServerGoingAwayIsRetriedUntilTheMigrationFails) {
  // The source's page server goes away for good: fetches retry (a break
  // might heal) until the destination gives up on the migration (Close),
  // then fail cleanly.
  migration_->EnableServing();
  RemotePageSource source(Options());
  std::vector<uint8_t> buf(kPage);
  ASSERT_OK(source.Fetch(0, absl::MakeSpan(buf)).status());
  server_.reset();
  std::thread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    source.Close();
  });
  EXPECT_THAT(source.Fetch(kPage, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed")));
  closer.join();
  EXPECT_GT(source.Stats().retries, 0u);
}

}  // namespace
}  // namespace ferry::migration::fetch

namespace ferry::migration::fetch {
namespace {

// A connection through the handshake, by hand.
UniqueFd HandshakenConnection(int port, const Secret& secret) {
  UniqueFd fd = ConnectTcp(absl::StrCat("127.0.0.1:", port), 2000).value();
  uint8_t sh[kServerHelloSize];
  EXPECT_OK(RecvAll(fd.get(), sh, sizeof(sh), 2000));
  ServerHello hello = DecodeServerHello(sh).value();
  uint8_t ch[kClientHelloSize];
  Encode(ClientHello{"m1", ComputeProof(secret, hello.nonce, "m1")}, ch);
  EXPECT_OK(SendAll(fd.get(), ch, sizeof(ch)));
  uint8_t hr[kHelloResultSize];
  EXPECT_OK(RecvAll(fd.get(), hr, sizeof(hr), 2000));
  return fd;
}

using ::ferry::testing::ClosedWithin;

using FetchChannelLimits = FetchChannelTest;

// A client that pipelines requests and never reads the replies: the
// server stops reading its requests once 4 MiB of replies wait, instead of
// queueing the pages of every request; reading the replies lets the rest
// through, every one answered.
TEST_F(FetchChannelLimits, RepliesNobodyReadsAreBounded) {
  migration_->EnableServing();
  UniqueFd fd = HandshakenConnection(server_->port(), secret_);
  int flags = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
  constexpr int kRequests = 6000;
  int sent = 0;
  uint8_t req[kRequestSize];
  // 32-page requests: up to 128 KiB of reply each.
  const int64_t give_up = MonotonicNowNanos() + 3'000'000'000;
  while (sent < kRequests && MonotonicNowNanos() < give_up) {
    Encode(Request{static_cast<uint32_t>(sent), static_cast<uint8_t>(kMaxPagesPerRequest), 0},
           req);
    const ssize_t n = send(fd.get(), req, sizeof(req), MSG_NOSIGNAL);
    if (n == sizeof(req)) {
      ++sent;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const uint64_t served_while_unread = server_->Stats().requests;
  // Without the bound all 6000 (750 MiB of replies) would be queued.
  EXPECT_LT(served_while_unread, 200u)
      << "served " << served_while_unread << " of " << sent << " without a reply read";
  // Now read everything: every request sent is answered.
  fcntl(fd.get(), F_SETFL, flags);
  std::vector<uint8_t> buf(kReplyHeaderSize + kMaxPagesPerRequest * kPage);
  for (int i = 0; i < sent; ++i) {
    ASSERT_OK(RecvAll(fd.get(), buf.data(), kReplyHeaderSize, 5000)) << i;
    ASSERT_OK_AND_ASSIGN(ReplyHeader h,
                         DecodeReplyHeader(absl::MakeConstSpan(buf.data(), kReplyHeaderSize),
                                           kPage));
    if (h.data_len > 0) ASSERT_OK(RecvAll(fd.get(), buf.data(), h.data_len, 5000));
  }
  EXPECT_EQ(server_->Stats().requests, static_cast<uint64_t>(sent));
}

// A connection that never finishes its handshake is closed after 5 s.
TEST_F(FetchChannelLimits, AStalledHandshakeIsClosed) {
  ASSERT_OK_AND_ASSIGN(UniqueFd fd,
                       ConnectTcp(absl::StrCat("127.0.0.1:", server_->port()), 2000));
  uint8_t sh[kServerHelloSize];
  ASSERT_OK(RecvAll(fd.get(), sh, sizeof(sh), 2000));
  EXPECT_TRUE(ClosedWithin(fd.get(), 8000));
  EXPECT_GE(server_->Stats().handshakes_failed, 1u);
}

// Serving only while the migration runs: once unregistered, its idle
// connections are closed (not at their next request).
TEST_F(FetchChannelLimits, ConnectionsEndWithTheirMigration) {
  migration_->EnableServing();
  UniqueFd fd = HandshakenConnection(server_->port(), secret_);
  EXPECT_FALSE(ClosedWithin(fd.get(), 400)) << "open while the migration runs";
  server_->Unregister("m1");
  EXPECT_TRUE(ClosedWithin(fd.get(), 2000));
}

}  // namespace
}  // namespace ferry::migration::fetch

namespace ferry::migration::fetch {
namespace {

TEST(ReplySeal, OpensWhatItSealedAndNothingElse) {
  Secret secret;
  secret.fill(1);
  Nonce nonce;
  nonce.fill(2);
  ASSERT_OK_AND_ASSIGN(auto server, ReplySeal::Create(secret, nonce, "m1"));
  ASSERT_OK_AND_ASSIGN(auto client, ReplySeal::Create(secret, nonce, "m1"));
  uint8_t header[kReplyHeaderSize] = {1, 2, 3};
  std::vector<uint8_t> page(4096, 'Q'), tag(kSealTagSize);
  ASSERT_OK(server->Seal(header, page.data(), page.size(), tag.data()));
  EXPECT_NE(page, std::vector<uint8_t>(4096, 'Q')) << "the page is encrypted";
  std::vector<uint8_t> copy = page;
  ASSERT_OK(client->Open(header, page.data(), page.size(), tag.data()));
  EXPECT_EQ(page, std::vector<uint8_t>(4096, 'Q'));
  // The same reply again (a replay) does not open: the sequence moved on.
  EXPECT_THAT(client->Open(header, copy.data(), copy.size(), tag.data()),
              StatusIs(absl::StatusCode::kDataLoss));
  // A changed byte of the data or of the header does not open either.
  ASSERT_OK_AND_ASSIGN(auto s2, ReplySeal::Create(secret, nonce, "m1"));
  ASSERT_OK_AND_ASSIGN(auto c2, ReplySeal::Create(secret, nonce, "m1"));
  std::vector<uint8_t> p2(4096, 'Q');
  ASSERT_OK(s2->Seal(header, p2.data(), p2.size(), tag.data()));
  p2[100] ^= 1;
  EXPECT_THAT(c2->Open(header, p2.data(), p2.size(), tag.data()),
              StatusIs(absl::StatusCode::kDataLoss));
  // Another connection's key (another nonce) does not open it.
  Nonce other = nonce;
  other[0] ^= 1;
  ASSERT_OK_AND_ASSIGN(auto s3, ReplySeal::Create(secret, nonce, "m1"));
  ASSERT_OK_AND_ASSIGN(auto c3, ReplySeal::Create(secret, other, "m1"));
  std::vector<uint8_t> p3(64, 'Q');
  ASSERT_OK(s3->Seal(header, p3.data(), p3.size(), tag.data()));
  EXPECT_THAT(c3->Open(header, p3.data(), p3.size(), tag.data()),
              StatusIs(absl::StatusCode::kDataLoss));
}

// A page server whose migration encrypts, and fetchers that expect it:
// single fetches and batches deliver the right pages, and what crosses the
// wire is not the page.
TEST_F(FetchChannelTest, EncryptedRepliesDeliverTheRightPages) {
  server_->Unregister("m1");
  auto encrypted = std::make_shared<ServedMigration>("m1", secret_, memory_.get(), nullptr,
                                                     /*encrypt=*/true);
  encrypted->EnableServing();
  server_->Register(encrypted);
  FetcherOptions o = Options();
  o.encrypt = true;
  RemotePageSource source(o);
  std::vector<uint8_t> buf(kPage);
  for (uint64_t p : {0, 3, 7, 100, 255}) {
    ASSERT_OK_AND_ASSIGN(vmm::FetchedPage page, source.Fetch(p * kPage, absl::MakeSpan(buf)));
    if (p % 4 == 3) {
      EXPECT_EQ(page.content, vmm::PageContent::kZero) << p;
    } else {
      ASSERT_EQ(page.content, vmm::PageContent::kData) << p;
      EXPECT_EQ(std::memcmp(page.data, memory_->host() + p * kPage, kPage), 0) << p;
    }
  }
  int delivered = 0;
  ASSERT_OK(source.FetchRuns({{0, 40}, {200 * kPage, 10}}, kPage,
                             [&](uint64_t gpa, const vmm::FetchedPage& page) -> absl::Status {
                               ++delivered;
                               const uint64_t p = gpa / kPage;
                               if (p % 4 == 3) {
                                 EXPECT_EQ(page.content, vmm::PageContent::kZero);
                               } else {
                                 EXPECT_EQ(std::memcmp(page.data, memory_->host() + gpa, kPage), 0)
                                     << p;
                               }
                               return absl::OkStatus();
                             }));
  EXPECT_EQ(delivered, 50);
  // By hand: the reply's data is not the page's bytes.
  UniqueFd fd = HandshakenConnection(server_->port(), secret_);
  uint8_t req[kRequestSize];
  Encode(Request{1, 1, 0}, req);
  ASSERT_OK(SendAll(fd.get(), req, sizeof(req)));
  std::vector<uint8_t> reply(kReplyHeaderSize + kPage + kSealTagSize);
  ASSERT_OK(RecvAll(fd.get(), reply.data(), reply.size(), 2000));
  EXPECT_NE(std::memcmp(reply.data() + kReplyHeaderSize, memory_->host(), kPage), 0)
      << "page 0 crossed the wire in the clear";
}

}  // namespace
}  // namespace ferry::migration::fetch

namespace ferry::migration::fetch {
namespace {

// A flood of connections on the fetch port that never finish their
// handshake: at most 64 stay unauthenticated (each new one sheds the
// oldest), the agent's file descriptors are not exhausted, a lane that
// proved itself before the flood keeps being served, and new fetches work
// while the flood is still held open.
TEST_F(FetchChannelLimits, AConnectionFloodIsShedAndServingGoesOn) {
  ::ferry::testing::ScopedFdLimit fds(4096);
  if (!fds.ok()) GTEST_SKIP() << "needs 4096 file descriptors";
  migration_->EnableServing();
  RemotePageSource before(Options());
  std::vector<uint8_t> buf(kPage);
  ASSERT_OK(before.Fetch(0, absl::MakeSpan(buf)).status());
  std::vector<UniqueFd> flood;
  for (int i = 0; i < 1200; ++i) {
    auto fd = ConnectTcp(absl::StrCat("127.0.0.1:", server_->port()), 2000);
    ASSERT_TRUE(fd.ok()) << i << ": " << fd.status();
    flood.push_back(*std::move(fd));
  }
  // The server sheds them as they come: all but the newest 64 or so are
  // closed by the server (a read sees the end after the server hello).
  Eventually([&] { return server_->Stats().connections_shed >= 1200u - 64u; }, absl::Seconds(30));
  EXPECT_GE(server_->Stats().connections_shed, 1200u - 64u);
  EXPECT_EQ(server_->Stats().connections_refused, 0u);
  // With the flood still open: the lane from before and a new one serve.
  ASSERT_OK(before.Fetch(kPage, absl::MakeSpan(buf)).status());
  RemotePageSource during(Options());
  ASSERT_OK(during.Fetch(2 * kPage, absl::MakeSpan(buf)).status());
  flood.clear();
}

}  // namespace
}  // namespace ferry::migration::fetch
