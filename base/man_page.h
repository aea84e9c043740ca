// ManPage: a roff man page (man(7) macros) made from a binary's own help
// text, so the page and `--help` cannot disagree. Sections are printed as
// given, in no-fill mode (the help's layout kept); roff's special
// characters in the text are escaped.
//
//   std::cout << ManPage("ferryd", 8, "the Ferry host agent",
//                        {{"SYNOPSIS", "ferryd [flags]"}, {"OPTIONS", kUsage}});
#ifndef FERRY_BASE_MAN_PAGE_H_
#define FERRY_BASE_MAN_PAGE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace ferry {

std::string ManPage(absl::string_view name, int section, absl::string_view summary,
                    const std::vector<std::pair<std::string, std::string>>& sections);

}  // namespace ferry

#endif  // FERRY_BASE_MAN_PAGE_H_
