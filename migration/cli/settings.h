// Settings of the ferry CLI that flags leave out (docs/cli.md, "Settings"):
// flags win over the environment, which wins over the config file.
//
//   setting      flag(s)            environment     config file key
//   agent        --agent, --from    FERRY_AGENT     agent
//   TLS CA       --tls-ca           FERRY_TLS_CA    tls-ca
//   TLS cert     --tls-cert         FERRY_TLS_CERT  tls-cert
//   TLS key      --tls-key          FERRY_TLS_KEY   tls-key
//   timeout      --connect-timeout-ms  -            connect-timeout-ms
//
// The config file is $FERRY_CONFIG, else $XDG_CONFIG_HOME/ferry/config,
// else ~/.config/ferry/config; a missing file is no error (but a missing
// $FERRY_CONFIG is). Its format: base/config_file.h. An unknown key is
// InvalidArgument naming FILE:LINE.
#ifndef FERRY_MIGRATION_CLI_SETTINGS_H_
#define FERRY_MIGRATION_CLI_SETTINGS_H_

#include <string>

#include "absl/status/status.h"
#include "base/args.h"

namespace ferry::cli {

// The config file's path as above ("" when none applies).
std::string ConfigPath();

// Gives `args` the environment's and the config file's settings as
// defaults of the flags they stand for.
absl::Status ApplySettings(Args& args);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_SETTINGS_H_
