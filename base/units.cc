#include "base/units.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace ferry {
namespace {

struct Unit {
  const char* name;
  double bytes;  // what one of it is, in bytes
  bool decimal_bytes;
  bool bits;
};

// Matched case-sensitively first, then case-insensitively for the binary
// byte units only ("1g" is 1G; "1gb" stays a decimal unit).
constexpr Unit kUnits[] = {
    {"", 1, false, false},
    {"B", 1, false, false},
    {"K", 1024.0, false, false},
    {"M", 1048576.0, false, false},
    {"G", 1073741824.0, false, false},
    {"T", 1099511627776.0, false, false},
    {"KiB", 1024.0, false, false},
    {"MiB", 1048576.0, false, false},
    {"GiB", 1073741824.0, false, false},
    {"TiB", 1099511627776.0, false, false},
    {"kB", 1e3, true, false},
    {"KB", 1e3, true, false},
    {"MB", 1e6, true, false},
    {"GB", 1e9, true, false},
    {"TB", 1e12, true, false},
    {"bit", 1.0 / 8, false, true},
    {"kbit", 1e3 / 8, false, true},
    {"Kbit", 1e3 / 8, false, true},
    {"Mbit", 1e6 / 8, false, true},
    {"Gbit", 1e9 / 8, false, true},
    {"Tbit", 1e12 / 8, false, true},
};

const Unit* FindUnit(absl::string_view name) {
  for (const Unit& u : kUnits)
    if (name == u.name) return &u;
  const std::string upper = absl::AsciiStrToUpper(name);
  for (const Unit& u : kUnits)
    if (!u.decimal_bytes && !u.bits && upper == absl::AsciiStrToUpper(u.name)) return &u;
  return nullptr;
}

enum class Kind { kSize, kRate };

absl::StatusOr<uint64_t> Parse(absl::string_view text, absl::string_view what, Kind kind) {
  const char* example =
      kind == Kind::kSize ? "e.g. 64K, 512M, 1G, 1GiB" : "e.g. 16M, 125MB/s, 1Gbit/s";
  absl::string_view t = absl::StripAsciiWhitespace(text);
  if (kind == Kind::kRate) absl::ConsumeSuffix(&t, "/s");
  size_t digits = 0;
  while (digits < t.size() &&
         (std::isdigit(static_cast<unsigned char>(t[digits])) || t[digits] == '.'))
    ++digits;
  double number;
  if (digits == 0 || !absl::SimpleAtod(t.substr(0, digits), &number) || number < 0)
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", text, "' is not a ",
                                                   kind == Kind::kSize ? "size" : "rate",
                                                   " (", example, ")"));
  const absl::string_view unit_name = t.substr(digits);
  const Unit* unit = FindUnit(unit_name);
  if (unit == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": '", text, "' has an unknown unit '", unit_name, "' (", example, ")"));
  if (unit_name.empty() && number != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": '", text, "' has no unit: write ", text,
        kind == Kind::kSize ? "M for MiB (as QEMU reads a bare number) or " : "M for MiB/s or ",
        text, "B for bytes"));
  if (kind == Kind::kSize && unit->bits)
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", text, "' is a size, not in bits (", example, ")"));
  if (kind == Kind::kSize && unit->decimal_bytes)
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": '", text, "' is a decimal unit; sizes are binary: write ",
        t.substr(0, digits), std::string(1, absl::ascii_toupper(unit_name[0])), " or ",
        t.substr(0, digits), std::string(1, absl::ascii_toupper(unit_name[0])),
        "iB (1G = 1024M)"));
  const double bytes = number * unit->bytes;
  if (bytes >= 1.8e19)
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", text, "' is too large"));
  return static_cast<uint64_t>(std::llround(bytes));
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(absl::string_view text, absl::string_view what) {
  return Parse(text, what, Kind::kSize);
}

absl::StatusOr<uint64_t> ParseRate(absl::string_view text, absl::string_view what) {
  return Parse(text, what, Kind::kRate);
}

absl::StatusOr<uint64_t> ParseAddress(absl::string_view text, absl::string_view what) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  if (absl::ConsumePrefix(&t, "0x") || absl::ConsumePrefix(&t, "0X")) {
    uint64_t value = 0;
    // SimpleHexAtoi takes a sign and its own "0x": neither belongs here.
    const bool hex_digits =
        !t.empty() && t.size() <= 16 && std::all_of(t.begin(), t.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) != 0;
        });
    if (!hex_digits || !absl::SimpleHexAtoi(t, &value))
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": '", text, "' is not an address (e.g. 0x100000000, or a size: 4G)"));
    return value;
  }
  return ParseSize(text, what);
}

std::string FormatSize(uint64_t bytes) {
  static constexpr struct {
    uint64_t unit;
    const char* name;
  } kSizeUnits[] = {
      {1ull << 40, "TiB"}, {1ull << 30, "GiB"}, {1ull << 20, "MiB"}, {1ull << 10, "KiB"}};
  for (const auto& u : kSizeUnits)
    if (bytes >= u.unit && bytes % u.unit == 0) return absl::StrCat(bytes / u.unit, " ", u.name);
  return absl::StrCat(bytes, " bytes");
}

std::string FormatRate(double bytes_per_sec) {
  const double bits = bytes_per_sec * 8;
  if (bits >= 1e9) return absl::StrFormat("%.2f Gbit/s", bits / 1e9);
  if (bits >= 1e6) return absl::StrFormat("%.1f Mbit/s", bits / 1e6);
  if (bits >= 1e3) return absl::StrFormat("%.1f kbit/s", bits / 1e3);
  return absl::StrFormat("%.0f bit/s", bits);
}

}  // namespace ferry
