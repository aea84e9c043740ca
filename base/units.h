// Units: the one rule every Ferry binary uses to read and print sizes and
// rates (docs/cli.md, "Units").
//
//   sizes  (--memory, --max-memory, ...): a number and a binary unit,
//          K M G T (or KiB MiB GiB TiB) = 1024^n bytes; "B" is bytes.
//          A bare number other than 0 is refused (QEMU reads `1024` as MiB,
//          others as bytes: the flag says which), and so are the decimal
//          kB/MB/GB/TB (1GB is not 1G): both with a hint naming the flag.
//   rates  (--max-bandwidth, --dirty-rate): bytes per second, an optional
//          "/s". K M G T, KiB ... TiB as for sizes (binary bytes); kB MB GB
//          TB are decimal bytes (125MB/s = 125,000,000 bytes/s); kbit Mbit
//          Gbit Tbit are decimal bits (1Gbit/s = 125,000,000 bytes/s). A
//          bare number other than 0 is refused.
//   addresses (--gpa): "0x" and hex digits (0x100000000), or a size by
//          the rule above (4G); "0" is 0.
//   output prints rates in Gbit/s or Mbit/s (FormatRate), units the input
//          accepts; sizes exactly, in the largest binary unit that divides
//          them (FormatSize: "1 GiB", "192 MiB", "4097 bytes").
//
// Every error is InvalidArgument naming `what` (the flag) and the value.
#ifndef FERRY_BASE_UNITS_H_
#define FERRY_BASE_UNITS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry {

// Bytes, by the size rule above.
absl::StatusOr<uint64_t> ParseSize(absl::string_view text, absl::string_view what);

// Bytes per second, by the rate rule above.
absl::StatusOr<uint64_t> ParseRate(absl::string_view text, absl::string_view what);

// A guest-physical address: hex with "0x", or a size ("4G" is 0x100000000).
absl::StatusOr<uint64_t> ParseAddress(absl::string_view text, absl::string_view what);

// "1.00 Gbit/s", "16.8 Mbit/s", "0 bit/s": bits per second, decimal.
std::string FormatRate(double bytes_per_sec);

// "1 GiB", "192 MiB", "12 KiB", "4097 bytes", "0 bytes": exact.
std::string FormatSize(uint64_t bytes);

}  // namespace ferry

#endif  // FERRY_BASE_UNITS_H_
