#include "base/man_page.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "base/version.h"

namespace ferry {
namespace {

// One line of text as roff input: backslashes and dashes escaped, and a
// line that would start with a control character ('.' or ') guarded.
std::string Escape(absl::string_view line) {
  std::string out = absl::StrReplaceAll(line, {{"\\", "\\e"}, {"-", "\\-"}});
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out = "\\&" + out;
  return out;
}

}  // namespace

std::string ManPage(absl::string_view name, int section, absl::string_view summary,
                    const std::vector<std::pair<std::string, std::string>>& sections) {
  std::string out = absl::StrCat(".TH ", absl::AsciiStrToUpper(name), " ", section,
                                 " \"\" \"Ferry ", FerryVersion(), "\" \"Ferry\"\n");
  absl::StrAppend(&out, ".SH NAME\n", Escape(name), " \\- ", Escape(summary), "\n");
  for (const auto& [title, text] : sections) {
    absl::StrAppend(&out, ".SH ", absl::AsciiStrToUpper(title), "\n.nf\n");
    for (absl::string_view line : absl::StrSplit(text, '\n'))
      absl::StrAppend(&out, Escape(line), "\n");
    absl::StrAppend(&out, ".fi\n");
  }
  return out;
}

}  // namespace ferry
