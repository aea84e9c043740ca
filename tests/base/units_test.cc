#include "base/units.h"

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParseSize, BinaryUnitsAreBinary) {
  EXPECT_THAT(ParseSize("64K", "x"), IsOkAndHolds(64u << 10));
  EXPECT_THAT(ParseSize("16M", "x"), IsOkAndHolds(16u << 20));
  EXPECT_THAT(ParseSize("1G", "x"), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(ParseSize("1g", "x"), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(ParseSize("1GiB", "x"), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(ParseSize("1.5G", "x"), IsOkAndHolds(3ull << 29));
  EXPECT_THAT(ParseSize("4096B", "x"), IsOkAndHolds(4096u));
  EXPECT_THAT(ParseSize("0", "x"), IsOkAndHolds(0u));
}

TEST(ParseSize, ABareNumberIsRefusedNeverReadAsBytes) {
  EXPECT_THAT(ParseSize("1024", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--memory: '1024' has no unit: write 1024M for MiB")));
}

TEST(ParseSize, DecimalUnitsAndBitsAreRefusedWithAHint) {
  EXPECT_THAT(ParseSize("1GB", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sizes are binary: write 1G or 1GiB")));
  EXPECT_THAT(ParseSize("1Gbit", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not in bits")));
  EXPECT_THAT(ParseSize("1G/s", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown unit")));
}

TEST(ParseSize, MalformedSizesAreRefusedNamingTheFlag) {
  EXPECT_THAT(ParseSize("lots", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--memory")));
  EXPECT_THAT(ParseSize("12Q", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown unit 'Q'")));
  EXPECT_THAT(ParseSize("", "--memory"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseSize("-1G", "--memory"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseSize("99999999999T", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));
}

TEST(ParseRate, EachUnitMeansWhatItSays) {
  EXPECT_THAT(ParseRate("1Gbit/s", "x"), IsOkAndHolds(125000000u));   // bits, decimal
  EXPECT_THAT(ParseRate("125MB/s", "x"), IsOkAndHolds(125000000u));   // bytes, decimal
  EXPECT_THAT(ParseRate("1G", "x"), IsOkAndHolds(1ull << 30));        // bytes, binary
  EXPECT_THAT(ParseRate("1G/s", "x"), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(ParseRate("16MiB/s", "x"), IsOkAndHolds(16u << 20));
  EXPECT_THAT(ParseRate("100Mbit", "x"), IsOkAndHolds(12500000u));
  EXPECT_THAT(ParseRate("0", "x"), IsOkAndHolds(0u));
}

TEST(ParseRate, ABareNumberIsRefused) {
  EXPECT_THAT(ParseRate("1000", "--max-bandwidth"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--max-bandwidth: '1000' has no unit")));
  EXPECT_THAT(ParseRate("1Gb/s", "--max-bandwidth"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown unit 'Gb'")));
}

TEST(FormatRate, PrintsAUnitTheInputTakes) {
  EXPECT_EQ(FormatRate(125e6), "1.00 Gbit/s");
  EXPECT_EQ(FormatRate(2e6), "16.0 Mbit/s");
  EXPECT_EQ(FormatRate(0), "0 bit/s");
  // What it prints parses back to the same rate.
  EXPECT_THAT(ParseRate("1.00Gbit/s", "x"), IsOkAndHolds(125000000u));
}

TEST(ParseAddress, HexOrASize) {
  EXPECT_THAT(ParseAddress("0x100000000", "--gpa"), IsOkAndHolds(4ull << 30));
  EXPECT_THAT(ParseAddress("0X40000000", "--gpa"), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(ParseAddress("0xffffffffffffffff", "--gpa"), IsOkAndHolds(~0ull));
  EXPECT_THAT(ParseAddress("4G", "--gpa"), IsOkAndHolds(4ull << 30));
  EXPECT_THAT(ParseAddress("0", "--gpa"), IsOkAndHolds(0u));
}

TEST(ParseAddress, MalformedAddressesAreRefusedNamingTheFlag) {
  for (const char* bad : {"0x", "0x-1", "0xg", "0x10000000000000000", "0x 1"})
    EXPECT_THAT(ParseAddress(bad, "--gpa"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--gpa: '")))
        << bad;
  // A bare number other than 0 is a size without its unit: refused as one.
  EXPECT_THAT(ParseAddress("4096", "--gpa"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no unit")));
}

TEST(FormatSize, PrintsTheLargestUnitThatDividesExactly) {
  EXPECT_EQ(FormatSize(1ull << 30), "1 GiB");
  EXPECT_EQ(FormatSize(192ull << 20), "192 MiB");
  EXPECT_EQ(FormatSize(1536ull << 20), "1536 MiB");
  EXPECT_EQ(FormatSize(12 << 10), "12 KiB");
  EXPECT_EQ(FormatSize(4097), "4097 bytes");
  EXPECT_EQ(FormatSize(0), "0 bytes");
}

}  // namespace
}  // namespace ferry
