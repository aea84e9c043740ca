// Help for the ferry CLI: one entry per command, each with its synopsis,
// what it does, its flags with their units and defaults, and an example.
// `ferry help [COMMAND...]`, `ferry COMMAND --help` and `-h` print them.
#ifndef FERRY_MIGRATION_CLI_HELP_H_
#define FERRY_MIGRATION_CLI_HELP_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::cli {

// The overview: every command in a line, the global flags, the exit codes.
std::string OverviewHelp();

// The help of the command named by `words` ("vm", "create"; "migrate";
// "migration", "watch"); for a group ("vm") the group's commands.
// InvalidArgument naming the unknown word.
absl::StatusOr<std::string> CommandHelp(const std::vector<std::string>& words);

// `ferry completion bash`: a bash completion script made from the help
// table: the commands, their subcommands and each command's flags.
std::string BashCompletion();

// `ferry help --man`: the man page ferry(1), from the same help texts.
std::string ManPageText();

// What a VM name may be (the agent enforces it; docs/cli.md).
std::string NameRule();

// "ferry 0.5.0".
std::string VersionLine(const char* binary);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_HELP_H_
