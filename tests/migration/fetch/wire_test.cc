#include "migration/fetch/wire.h"

#include <vector>

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry::migration::fetch {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;

std::vector<uint8_t> Bytes(const Request& m) {
  std::vector<uint8_t> b(kRequestSize);
  Encode(m, b.data());
  return b;
}
std::vector<uint8_t> Bytes(const ReplyHeader& m) {
  std::vector<uint8_t> b(kReplyHeaderSize);
  Encode(m, b.data());
  return b;
}
std::vector<uint8_t> Bytes(const ClientHello& m) {
  std::vector<uint8_t> b(kClientHelloSize);
  Encode(m, b.data());
  return b;
}

ReplyHeader GoodReply() {
  ReplyHeader r;
  r.tag = 9;
  r.count = 4;
  r.gpa = 0x10000;
  r.zero_mask = 0b0101;  // pages 0 and 2 are zero
  r.data_len = 2 * kPage;
  return r;
}

TEST(FetchWire, EveryFrameRoundTrips) {
  ServerHello sh;
  for (size_t i = 0; i < kNonceSize; ++i) sh.nonce[i] = i;
  uint8_t b1[kServerHelloSize];
  Encode(sh, b1);
  ASSERT_OK_AND_ASSIGN(ServerHello sh2, DecodeServerHello(b1));
  EXPECT_EQ(sh2.nonce, sh.nonce);

  ClientHello ch{"mig-42", {}};
  ch.proof[0] = 0xaa;
  ASSERT_OK_AND_ASSIGN(ClientHello ch2, DecodeClientHello(Bytes(ch)));
  EXPECT_EQ(ch2.migration_id, "mig-42");
  EXPECT_EQ(ch2.proof, ch.proof);

  uint8_t b3[kHelloResultSize];
  Encode(HelloResult{WireStatus::kBadProof}, b3);
  ASSERT_OK_AND_ASSIGN(HelloResult hr, DecodeHelloResult(b3));
  EXPECT_EQ(hr.status, WireStatus::kBadProof);

  ASSERT_OK_AND_ASSIGN(Request rq, DecodeRequest(Bytes(Request{7, 3, 0x2000})));
  EXPECT_EQ(rq.tag, 7u);
  EXPECT_EQ(rq.count, 3);
  EXPECT_EQ(rq.gpa, 0x2000u);

  ASSERT_OK_AND_ASSIGN(ReplyHeader rp, DecodeReplyHeader(Bytes(GoodReply()), kPage));
  EXPECT_EQ(rp.zero_mask, 0b0101u);
  EXPECT_EQ(rp.data_len, 2 * kPage);
  EXPECT_OK(MatchReply(rp, Request{9, 4, 0x10000}));
}

TEST(FetchWire, LayoutIsLittleEndianAtFixedOffsets) {
  std::vector<uint8_t> b = Bytes(Request{0x01020304, 2, 0x1122334455667788});
  EXPECT_EQ(b[0], 0x04);
  EXPECT_EQ(b[3], 0x01);
  EXPECT_EQ(b[4], 1);  // kind: request
  EXPECT_EQ(b[5], 2);
  EXPECT_EQ(b[8], 0x88);
  EXPECT_EQ(b[15], 0x11);
}

// One case per corruption.
TEST(FetchWireCorruption, TruncatedRequest) {
  std::vector<uint8_t> b = Bytes(Request{1, 1, 0});
  b.pop_back();
  EXPECT_THAT(DecodeRequest(b), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("15 bytes, the frame is 16")));
}
TEST(FetchWireCorruption, RequestOfUnknownKind) {
  std::vector<uint8_t> b = Bytes(Request{1, 1, 0});
  b[4] = 9;
  EXPECT_THAT(DecodeRequest(b), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("unknown frame kind 9")));
}
TEST(FetchWireCorruption, RequestForZeroPages) {
  EXPECT_THAT(DecodeRequest(Bytes(Request{1, 0, 0})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("page count 0")));
}
TEST(FetchWireCorruption, RequestForTooManyPages) {
  EXPECT_THAT(DecodeRequest(Bytes(Request{1, 33, 0})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("page count 33")));
}
TEST(FetchWireCorruption, RequestWithReservedBitsSet) {
  std::vector<uint8_t> b = Bytes(Request{1, 1, 0});
  b[6] = 1;
  EXPECT_THAT(DecodeRequest(b), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("reserved")));
}
TEST(FetchWireCorruption, ReplyAnnouncingTooMuchData) {
  ReplyHeader r = GoodReply();
  r.data_len = 3 * kPage;
  EXPECT_THAT(DecodeReplyHeader(Bytes(r), kPage),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("announced")));
}
TEST(FetchWireCorruption, ReplyZeroMaskBeyondCount) {
  ReplyHeader r = GoodReply();
  r.zero_mask = 0b10000;
  r.data_len = 4 * kPage;
  EXPECT_THAT(DecodeReplyHeader(Bytes(r), kPage),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zero mask")));
}
TEST(FetchWireCorruption, ErrorReplyCarryingData) {
  ReplyHeader r = GoodReply();
  r.status = WireStatus::kOutOfRange;
  EXPECT_THAT(DecodeReplyHeader(Bytes(r), kPage),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("error reply")));
}
TEST(FetchWireCorruption, ReplyWithUnknownStatus) {
  std::vector<uint8_t> b = Bytes(GoodReply());
  b[6] = 200;
  EXPECT_THAT(DecodeReplyHeader(b, kPage),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown status")));
}
TEST(FetchWireCorruption, ReplyToAnotherRequest) {
  ReplyHeader r = GoodReply();
  EXPECT_THAT(MatchReply(r, Request{10, 4, 0x10000}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not answer")));
  EXPECT_THAT(MatchReply(r, Request{9, 4, 0x11000}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}
TEST(FetchWireCorruption, HelloWithBadMagic) {
  std::vector<uint8_t> b = Bytes(ClientHello{"m", {}});
  b[0] = 'X';
  EXPECT_THAT(DecodeClientHello(b),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad magic")));
}
TEST(FetchWireCorruption, HelloFromAnotherVersion) {
  std::vector<uint8_t> b = Bytes(ClientHello{"m", {}});
  b[4] = 2;
  EXPECT_THAT(DecodeClientHello(b),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 2")));
}
TEST(FetchWireCorruption, HelloWithOversizeId) {
  std::vector<uint8_t> b = Bytes(ClientHello{"m", {}});
  b[6] = 65;
  EXPECT_THAT(DecodeClientHello(b), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("length 65")));
}
TEST(FetchWireCorruption, HelloWithGarbageAfterId) {
  std::vector<uint8_t> b = Bytes(ClientHello{"m", {}});
  b[8 + 10] = 'x';
  EXPECT_THAT(DecodeClientHello(b), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("not zero")));
}

TEST(FetchProof, DependsOnSecretNonceAndId) {
  Secret s1{}, s2{};
  s2[0] = 1;
  Nonce n1{}, n2{};
  n2[5] = 1;
  Proof p = ComputeProof(s1, n1, "m1");
  EXPECT_TRUE(ProofEquals(p, ComputeProof(s1, n1, "m1")));
  EXPECT_FALSE(ProofEquals(p, ComputeProof(s2, n1, "m1")));
  EXPECT_FALSE(ProofEquals(p, ComputeProof(s1, n2, "m1")));
  EXPECT_FALSE(ProofEquals(p, ComputeProof(s1, n1, "m2")));
}

TEST(FetchProof, RandomBytesAreNotConstant) {
  Secret a{}, b{};
  ASSERT_OK(RandomBytes(absl::MakeSpan(a)));
  ASSERT_OK(RandomBytes(absl::MakeSpan(b)));
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace ferry::migration::fetch
