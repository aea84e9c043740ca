#include "migration/cli/help.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "base/man_page.h"
#include "base/version.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"

namespace ferry::cli {
namespace {

struct Entry {
  const char* words;  // "vm create"
  const char* text;   // synopsis, description, flags, example
};

// {placeholders} are filled from migration/api/defaults.h, so the help
// states the defaults the code uses.
constexpr Entry kCommands[] = {
    {"vm create", R"(usage: ferry vm create NAME [--memory SIZE] [--max-memory SIZE] [--vcpus N]
                       [--workload KIND] [--ops N] [--seed N] [--zero-fraction F]
                       [--dirty-rate RATE] [--write-fraction F] [--hot-fraction F]
                       [--hot-access F] [--backend soft|kvm|auto] [--agent HOST:PORT]

Creates a VM on the agent and starts its guest workload.

  NAME               {name_rule}
  --memory SIZE      guest memory, a multiple of 2 MiB: 64M, 512M, 1G (binary: 1G = 1024M;
                     a bare number or 1GB is refused) (default {memory})
  --max-memory SIZE  the most memory vm resize and vm memory add may grow it to, a
                     multiple of 2 MiB, at most the agent's --max-memory (default: four
                     times --memory, within the agent's limit)
  --vcpus N          vCPUs, 1 to 256 (default {vcpus})
  --workload KIND    what the guest does (default {workload}):
                       idle        reads one word every millisecond, writes nothing
                       sequential  read-modify-write of one word per op, page after page
                       uniform     a random page per op; --write-fraction of the ops write
                       zipf        like uniform, pages drawn from Zipf(1): a hot set
                       dirty-rate  writes one random page per op, paced to --dirty-rate
                       hotset      like uniform, but --hot-access of the ops go to a hot set
                                   of --hot-fraction of the pages: a service's working set
  --ops N            operations per vCPU, then the guest halts; 0 runs until stopped (default 0)
  --seed N           the workload's seed: the same seed, the same memory (default 1)
  --zero-fraction F  fraction of pages that start as zero pages, 0 to 1 (default 0)
  --dirty-rate RATE  bytes per second the dirty-rate workload writes: 16M (MiB/s),
                     125MB/s, 1Gbit/s (default {dirty})
  --write-fraction F fraction of uniform, zipf and hotset ops that write, 0 to 1 (default {wf})
  --hot-fraction F   hotset: fraction of each vCPU's pages in its hot set, above 0 to 1
                     (default {hot})
  --hot-access F     hotset: fraction of the ops that go to the hot set, above 0 to 1
                     (default {hota})
  --backend B        soft: software vCPUs, the same on every host; kvm: KVM vCPUs (fails
                     where /dev/kvm does not open); auto: KVM where it opens (default {backend})

example: ferry --agent 10.0.0.1:7070 vm create web --memory 1G --vcpus 2 --workload zipf)"},
    {"vm list", R"(usage: ferry vm list [--json] [--agent HOST:PORT]

Lists the agent's VMs: state, memory, vCPUs, backend, workload, guest ops,
and the migration each is part of.

example: ferry --agent 10.0.0.1:7070 vm list)"},
    {"vm get", R"(usage: ferry vm get NAME [--json] [--agent HOST:PORT]

Shows one VM, its backend and why it was chosen, and for KVM what the
kernel offers.

example: ferry vm get web)"},
    {"vm stats", R"(usage: ferry vm stats NAME [--json] [--agent HOST:PORT]

Shows per-vCPU ops and states, guest ops/s since the previous stats call
(the first call: since the VM was created or arrived),
and for a VM that arrived by postcopy its faults and pages still missing.

example: ferry vm stats web)"},
    {"vm verify", R"(usage: ferry vm verify NAME [--timeout-ms N] [--json] [--agent HOST:PORT]

Compares the VM's memory digest with a replay of the same guest operations
on a VM that never moved. A finite workload is checked once it halts; an
endless one is paused for the check and resumed. Exit 3 on a mismatch.

  --timeout-ms N     how long to wait for a finite workload to halt (default 60000)

example: ferry --agent 10.0.0.2:7070 vm verify web)"},
    {"vm resume", R"(usage: ferry vm resume NAME [--force] [--agent HOST:PORT]

Resumes a paused VM on this agent. A VM that a failed migration kept
paused after switchover (vm get shows "held by") may have run on the
destination: resuming this copy would run the guest twice, so it needs
--force, once you made sure the destination does not run it.

  --force            resume a VM held by a failed migration, as of its switchover

example: ferry --agent 10.0.0.1:7070 vm resume web --force)"},
    {"vm snapshot", R"(usage: ferry vm snapshot NAME --to DIR [--live] [--stop] [--json]
                         [--agent HOST:PORT]

Writes a snapshot of the VM, its memory and vCPU state, to the directory
DIR on the agent's host (docs/snapshots.md). A running VM is paused for the
write and resumed after; a paused or halted one stays as it is. DIR must
not exist and its parent must; it is created 0700, its files 0600 (zero
pages are holes, not written). A write that fails leaves nothing at DIR
and resumes the VM. Refused (exit 6) while the VM migrates, is being
verified or snapshotted, is still filling from a lazy restore, or failed;
and when DIR exists.

  --to DIR           the snapshot directory to create; a relative path is taken from
                     this shell's working directory (the agent's host must have it)
  --live             write memory while the guest runs, then pause it only for the
                     pages written since and its vCPU state (a precopy to the file;
                     a guest that writes faster than the disk takes is paused
                     for what is left after 8 passes)
  --stop             leave the VM paused after the snapshot (to move it, or stop it as
                     of the snapshot); it resumes with vm resume

example: ferry vm snapshot web --to /srv/snapshots/web-1 --stop)"},
    {"vm restore", R"(usage: ferry vm restore NAME --from DIR [--lazy [--fault-mode exit|blocking]]
                        [--json] [--agent HOST:PORT]

Starts a new VM named NAME from the snapshot in DIR on the agent's host.
The snapshot is checked (format, version, checksums, sizes) before
anything is created, and NAME and the memory are admitted as for vm
create. Eager (the default): every page is read and checked, then the VM
runs on from where the snapshot left it. --lazy: the VM runs at once; a
page it touches first is read on demand and the rest is read in the
background (vm get shows the pages not read yet). A page that fails its
checksum is never installed: an eager restore fails and creates nothing,
a lazy one stops the VM for good (state failed, with the reason).

  --from DIR         the snapshot directory; a relative path is taken from this
                     shell's working directory (the agent's host must have it)
  --lazy             run at once and read memory on demand and in the background
  --fault-mode MODE  with --lazy: exit, a vCPU reads its own missing page; blocking,
                     handler threads do (KVM vCPUs on kernels without exit-on-missing
                     memslots always block) (default {fault})

example: ferry vm restore web-copy --from /srv/snapshots/web-1 --lazy)"},
    {"vm resize", R"(usage: ferry vm resize NAME --memory SIZE [--json] [--agent HOST:PORT]

Grows or shrinks the VM's main region ("ram", at gpa 0) to SIZE while the
guest runs: its vCPUs are held off guest code for an op while the memory
map changes, and never see it half changed. A grow reads zeros; a shrink
drops the pages past the new end. Prints the regions after the change and
how long the vCPUs were held off. Refused, with the agent's reason and
nothing changed: past the VM's maximum memory (vm get shows it) or the
agent's --max-memory (exit 6); a size that does not fit the map (the PC
hole at 3 GiB, another region; exit 2); while the VM migrates, is
snapshotted or verified, or still fills from a lazy restore (exit 6). A
VM whose memory map changed migrates and is snapshotted with its changes
(at most 256), and its copies replay them when verified.

  --memory SIZE      the main region's new size, a multiple of the page (KVM: of 2 MiB):
                     128M, 2G

example: ferry vm resize web --memory 2G)"},
    {"vm memory", R"(usage: ferry vm memory add NAME --region R --gpa ADDR --size SIZE [--json]
       ferry vm memory remove NAME --region R [--json] [--agent HOST:PORT]

Adds a memory region to a running VM, or removes one, as vm resize does
for the main region (the same hold-off, output and refusals). An added
region reads zeros; a removed one's pages are gone. A region may not
overlap another or the PC hole [3 GiB, 4 GiB), nor the main region's part
above 4 GiB; the main region cannot be removed.

  --region R         the region's name: 1 to 32 of a-z, 0-9, '_' and '-'
  --gpa ADDR         add: where it starts in guest-physical memory, in hex (0x100000000)
                     or as a size (4G); a multiple of the page (KVM: of 2 MiB)
  --size SIZE        add: its size, a multiple of the page (KVM: of 2 MiB): 64M, 1G

example: ferry vm memory add web --region dimm0 --gpa 0x100000000 --size 1G)"},
    {"vm delete", R"(usage: ferry vm delete NAME [--agent HOST:PORT]

Stops the VM and frees its memory. Refused while it is migrating.

example: ferry vm delete web)"},
    {"migrate", R"(usage: ferry migrate NAME --from HOST:PORT --to HOST:PORT [--mode MODE]
                     [--downtime-target-ms MS] [--max-bandwidth RATE] [--fault-mode MODE]
                     [--max-rounds N] [--streams N] [--recovery-timeout-ms MS]
                     [--auto-converge [--throttle-initial PCT] [--throttle-step PCT]
                     [--throttle-max PCT]] [--request-id ID] [--json] [--detach] [--check]

Moves VM NAME from the agent --from to the agent --to (the address as the
source agent reaches it) and follows it to the end: a live line on a
terminal, plain progress lines otherwise, then the report. Ctrl-C cancels
the migration if it has not switched over (the VM runs on at the source);
after switchover it cannot be cancelled and goes on: the command says how
to follow it and exits with 130. If the network breaks after switchover the
migration pauses and the source reconnects on its own (postcopy recovery);
the command's own progress stream reconnects too.

  --mode MODE              precopy: copy memory while the guest runs, pause for the rest;
                           postcopy: switch over at once, fetch memory on demand;
                           hybrid: precopy, then postcopy when precopy will not converge
                           (default {mode})
  --downtime-target-ms MS  the pause the switchover aims for (default {downtime})
  --max-bandwidth RATE     cap: 1Gbit/s (bits), 125MB/s (decimal bytes), 1G (GiB/s);
                           0 is no cap (default 0)
  --fault-mode MODE        exit: a vCPU fetches its own missing page; blocking: handler
                           threads do (KVM vCPUs always block) (default {fault})
  --max-rounds N           precopy rounds before giving up or switching (default {rounds})
  --streams N              connections for precopy pages and the postcopy push,
                           1 to 8 (default: one per four cores of the source
                           host, 1 to 4)
  --recovery-timeout-ms MS after switchover, how long a broken migration keeps
                           reconnecting before it fails, keeping the source's
                           memory (default {recovery})
  --auto-converge          when precopy cannot converge, throttle the guest's vCPUs
                           (each sleeps PCT% of every 10 ms) instead of giving up:
                           --throttle-initial PCT at first (default {throttle_initial}),
                           --throttle-step PCT more each round that still cannot
                           (default {throttle_step}), up to --throttle-max PCT (default
                           {throttle_max}); each 1 to 99. Off by default: it slows the guest
  --request-id ID          makes the start idempotent: the same ID with the same
                           parameters is the same migration; with others, exit 6
  --json                   JSON only: a progress object a line, then the final object
  --detach                 start it and return (the migration's id, or with --json
                           the migration as JSON); follow it with migration watch
  --check                  start nothing: run every check that can fail before a page
                           moves (both agents and the fetch channel reachable, token
                           and TLS, protocol version, the name free and the limits and
                           free memory at the destination, backend and fault mode)
                           and print each with its result; exit 0 if all pass, else 1

example: ferry migrate web --from 10.0.0.1:7070 --to 10.0.0.2:7070 --mode postcopy)"},
    {"migration list",
     R"(usage: ferry migration list [--vm NAME] [--phase PHASE] [--limit N] [--json]
                            [--agent HOST:PORT]

Lists the migrations the agent drives, running and finished, and those
arriving there, oldest first (by start time).

  --vm NAME          only the migrations of this VM
  --phase PHASE      only those in this phase: setup, precopy, switchover, postcopy,
                     completed, failed, cancelled or postcopy-paused
  --limit N          only the newest N (default 0: all)

example: ferry --agent 10.0.0.1:7070 migration list)"},
    {"migration get", R"(usage: ferry migration get ID [--json] [--agent HOST:PORT]

Shows one migration: where it goes, its phase, when it started and ended
(wall clock, the agent's), its progress and, once it ended, its report.

example: ferry --agent 10.0.0.1:7070 migration get mig-704edddb438098f3)"},
    {"migration watch", R"(usage: ferry migration watch ID [--json] [--agent HOST:PORT]

Follows a migration to its end like ferry migrate does. The exit code is
the migration's: 0 only if it completed. With --json: one progress object
a line while it runs, then the final object (as migration get --json).
Ctrl-C stops watching (exit 130); the migration goes on.

example: ferry --agent 10.0.0.1:7070 migration watch mig-704edddb438098f3)"},
    {"migration cancel", R"(usage: ferry migration cancel ID [--agent HOST:PORT]

Cancels a migration that has not switched over: the source VM runs on and
the destination drops its copy.

example: ferry --agent 10.0.0.1:7070 migration cancel mig-704edddb438098f3)"},
    {"migration recover", R"(usage: ferry migration recover ID [--to HOST:PORT] [--agent HOST:PORT]

Makes a migration after switchover reconnect now instead of at its next
backoff, optionally to a new address of the destination agent. A paused
migration (phase postcopy-paused) reconnects on its own; this is for when
you know the network is back, or the destination moved.

  --to HOST:PORT     the destination agent's address from now on

example: ferry --agent 10.0.0.1:7070 migration recover mig-704edddb438098f3 --to 10.0.1.2:7070)"},
    {"migration postcopy", R"(usage: ferry migration postcopy ID [--agent HOST:PORT]

Switches a running hybrid migration to postcopy now, before its policy
would (like QEMU's migrate-start-postcopy): at the next chunk of the first
round or the end of the current precopy round. Refused (exit 6) with the
reason for a precopy-mode migration (its destination did not prepare
demand paging: start it with --mode hybrid), a postcopy-mode one, or once
precopy has stopped or the migration ended.

example: ferry --agent 10.0.0.1:7070 migration postcopy mig-704edddb438098f3)"},
    {"migration set", R"(usage: ferry migration set ID [--max-bandwidth RATE]
                          [--downtime-target-ms MS] [--streams N] [--agent HOST:PORT]

Changes a running outgoing migration's parameters: all that are given, or
none (exit 2, 4 or 6 with the reason). The report records each change with
its time. The max bandwidth applies from the next frame sent, in any phase
before the end; the downtime target at the next switchover decision, and
only before switchover; streams from the next precopy round after round 0,
only while precopy runs (not in postcopy mode).

  --max-bandwidth RATE      bytes per second (e.g. 200M); 0: no cap
  --downtime-target-ms MS   the pause switchover aims for, at least 1
  --streams N               connections carrying precopy pages, 1 to 8

example: ferry --agent 10.0.0.1:7070 migration set mig-704edddb438098f3 --max-bandwidth 50M)"},
    {"events", R"(usage: ferry events [--vm NAME] [--migration ID] [--since SEQ] [--count N]
                    [--json] [--agent HOST:PORT]

Streams the agent's events as they happen, one line each: VMs created,
deleted, resumed or failed; migrations started or admitted, each phase
change on this agent's side (source or destination), parameter changes,
forced postcopy, recoveries and the end; and every refused request. Each
line: the time, the sequence number, the side, the VM, the kind and its
details; with --json one object per line. Runs until Ctrl-C, --count
events, or the agent shuts down. An "events-lost" line says how many
events a slow reader missed (the agent keeps its last 4096).

  --vm NAME          only this VM's events
  --migration ID     only this migration's events
  --since SEQ        first the events still kept from sequence SEQ on (1: all)
  --count N          exit after N events

example: ferry --agent 10.0.0.1:7070 events --vm web --json)"},
    {"demo", R"(usage: ferry demo [--memory SIZE] [--vcpus N] [--workload KIND] [--zero-fraction F]
                  [--dirty-rate RATE] [--mode MODE] [--fault-mode MODE]
                  [--downtime-target-ms MS] [--max-bandwidth RATE] [--backend B] [--json]

Starts two ferryd agents on loopback, creates a VM on the first, migrates
it to the second with live progress, verifies its memory against a replay
and prints the report (what ./dev demo runs). Flags as in vm create and
migrate (default memory {memory}, zero fraction {zf}, mode {mode}).

example: ferry demo --memory 256M --mode postcopy)"},
    {"help", R"(usage: ferry help [COMMAND] [--man]

Prints the help of a command (ferry help vm create), or the overview;
with --man, the man page ferry(1) made from the same texts.

  --man              the man page, in roff: man -l <(ferry help --man)

example: ferry help migrate)"},
    {"completion", R"(usage: ferry completion bash

Prints a bash completion script for ferry's commands, subcommands and flags.

example: ferry completion bash > /etc/bash_completion.d/ferry)"},
};

std::string Fill(const char* text) {
  return absl::StrReplaceAll(text,
                             {{"{name_rule}", NameRule()},
                              {"{memory}", absl::StrCat(api::kDefaultMemoryBytes >> 20, "M")},
                              {"{vcpus}", absl::StrCat(api::kDefaultVcpus)},
                              {"{workload}", api::kDefaultWorkload},
                              {"{dirty}", absl::StrCat(api::kDefaultDirtyBytesPerSec >> 20, "M")},
                              {"{wf}", absl::StrCat(api::kDefaultWriteFraction)},
                              {"{hot}", absl::StrCat(api::kDefaultHotFraction)},
                              {"{hota}", absl::StrCat(api::kDefaultHotAccessFraction)},
                              {"{zf}", absl::StrCat(api::kDemoZeroFraction)},
                              {"{mode}", api::kDefaultMode},
                              {"{fault}", api::kDefaultFaultMode},
                              {"{downtime}", absl::StrCat(api::kDefaultDowntimeTargetMs)},
                              {"{rounds}", absl::StrCat(api::kDefaultMaxRounds)},
                              {"{throttle_initial}", absl::StrCat(api::kDefaultThrottleInitial)},
                              {"{throttle_step}", absl::StrCat(api::kDefaultThrottleStep)},
                              {"{throttle_max}", absl::StrCat(api::kDefaultThrottleMax)},
                              {"{recovery}", absl::StrCat(api::kDefaultRecoveryTimeoutMs)},
                              {"{backend}", api::kDefaultBackend}});
}

}  // namespace

std::string NameRule() { return api::kVmNameRule; }

std::string OverviewHelp() {
  return Fill(R"(ferry: move running VMs between hosts

usage: ferry [--agent HOST:PORT] COMMAND [flags]

VMs, on the agent --agent (default 127.0.0.1:7070):
  vm create NAME       create a VM running a guest workload
  vm list              the agent's VMs
  vm get NAME          one VM and its backend
  vm stats NAME        per-vCPU ops, faults and pages still missing
  vm verify NAME       compare its memory with a replay of its workload
  vm resume NAME       resume a paused VM (--force: one a failed migration held)
  vm snapshot NAME --to DIR
                       write its memory and vCPU state to a new directory (--live, --stop)
  vm restore NAME --from DIR
                       a new VM from a snapshot, eager or --lazy
  vm resize NAME --memory SIZE
                       grow or shrink its main memory region while it runs
  vm memory add|remove NAME --region R ...
                       add or remove a memory region while it runs
  vm delete NAME       stop it and free its memory

migrations:
  migrate NAME --from HOST:PORT --to HOST:PORT
                       move a VM and follow it to the end
  migration list       the migrations the agent drives
  migration get ID     one migration and its report
  migration watch ID   follow a migration to its end
  migration cancel ID  cancel a migration that has not switched over
  migration recover ID reconnect a paused postcopy migration now (--to: elsewhere)
  migration set ID     change a running migration's bandwidth or downtime target
  migration postcopy ID  switch a running hybrid migration to postcopy now
  events               the agent's events as they happen (--vm, --migration, --json)

  demo                 two agents on loopback, a live migration, a report
  help COMMAND         the help of a command, with an example (--man: the man page)
  completion bash      a bash completion script

flags every command takes:
  --agent HOST:PORT        the agent to talk to (default 127.0.0.1:7070)
  --tls-ca FILE [--tls-cert FILE --tls-key FILE]
                           TLS, mutual with a client certificate
  --connect-timeout-ms N   how long to try to reach an agent (default 10000)
  --json                   JSON instead of text (read commands and migrate)
  -h, --help               the command's help; --version: this build's version

settings: flags win over FERRY_AGENT, FERRY_TLS_CA, FERRY_TLS_CERT, FERRY_TLS_KEY,
which win over the config file ($XDG_CONFIG_HOME/ferry/config or
~/.config/ferry/config; $FERRY_CONFIG names another): `key = value` lines,
keys agent, tls-ca, tls-cert, tls-key, connect-timeout-ms
units: sizes are binary (1G = 1024M; a bare number is refused); rates are
bytes/s (16M, 125MB/s) or bits/s (1Gbit/s)

exit codes: 0 success, 1 the operation failed (a migration failed or was
cancelled), 2 bad usage, 3 verification failed, 4 not found, 5 an agent is
unreachable or shutting down, 6 conflict (wrong state, already exists, a
limit reached)
)");
}

absl::StatusOr<std::string> CommandHelp(const std::vector<std::string>& words) {
  if (words.empty()) return OverviewHelp();
  const std::string asked = absl::StrJoin(words, " ");
  for (const Entry& e : kCommands)
    if (asked == e.words) return Fill(e.text) + "\n";
  // A group: its commands' synopses.
  std::string group;
  for (const Entry& e : kCommands) {
    const std::string w = e.words;
    if (w.rfind(asked + " ", 0) == 0) {
      const std::string text = Fill(e.text);
      absl::StrAppend(&group, text.substr(0, text.find("\n\n")), "\n");
    }
  }
  if (!group.empty()) return absl::StrCat(group, "\n(ferry help ", asked, " COMMAND for more)\n");
  return absl::InvalidArgumentError(
      absl::StrCat("no help for '", asked, "': unknown command (see ferry help)"));
}

namespace {

// The flags an entry's text names ("--memory", ...), in order, once each,
// and the ones every command takes.
std::vector<std::string> FlagsOf(const char* text) {
  std::vector<std::string> flags;
  const std::string t = text;
  for (size_t at = t.find("--"); at != std::string::npos; at = t.find("--", at + 2)) {
    size_t end = at + 2;
    while (end < t.size() &&
           (absl::ascii_isalnum(static_cast<unsigned char>(t[end])) || t[end] == '-'))
      ++end;
    const std::string flag = t.substr(at, end - at);
    if (flag.size() > 2 && std::find(flags.begin(), flags.end(), flag) == flags.end())
      flags.push_back(flag);
  }
  for (const char* common : {"--agent", "--tls-ca", "--tls-cert", "--tls-key",
                             "--connect-timeout-ms", "--json", "--help"})
    if (std::find(flags.begin(), flags.end(), common) == flags.end()) flags.push_back(common);
  return flags;
}

}  // namespace

std::string BashCompletion() {
  // Commands and, for groups, their subcommands, in the table's order.
  std::vector<std::string> top;
  std::map<std::string, std::vector<std::string>> subs;
  std::string flag_cases;
  for (const Entry& e : kCommands) {
    const std::vector<std::string> words = absl::StrSplit(e.words, ' ');
    if (std::find(top.begin(), top.end(), words[0]) == top.end()) top.push_back(words[0]);
    if (words.size() > 1) subs[words[0]].push_back(words[1]);
    absl::StrAppend(&flag_cases, "    \"", e.words, "\") flags=\"",
                    absl::StrJoin(FlagsOf(e.text), " "), "\" ;;\n");
  }
  std::string sub_cases;
  for (const auto& [group, words] : subs)
    absl::StrAppend(&sub_cases, "      ", group, ") COMPREPLY=($(compgen -W \"",
                    absl::StrJoin(words, " "), "\" -- \"$cur\")); return ;;\n");
  return absl::StrCat(R"(# bash completion for ferry, generated by `ferry completion bash` from
# ferry's help table. Install: ferry completion bash > /etc/bash_completion.d/ferry
# (or source <(ferry completion bash) in ~/.bashrc).
_ferry() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local cmd="" sub="" i
  # The command words, skipping flags and their values.
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${COMP_WORDS[i]}" in
      --json|--help|-h|--detach|--force|--man|--check|--auto-converge|--stop|--lazy) ;;
      --*) [[ "${COMP_WORDS[i]}" == *=* ]] || ((i++)) ;;
      *) if [[ -z "$cmd" ]]; then cmd="${COMP_WORDS[i]}"; elif [[ -z "$sub" ]]; then sub="${COMP_WORDS[i]}"; fi ;;
    esac
  done
  if [[ "$cur" != -* ]]; then
    if [[ -z "$cmd" ]]; then
      COMPREPLY=($(compgen -W ")",
                      absl::StrJoin(top, " "), R"(" -- "$cur")); return
    fi
    if [[ -z "$sub" ]]; then
      case "$cmd" in
)",
                      sub_cases,
                      R"(        completion) COMPREPLY=($(compgen -W "bash" -- "$cur")); return ;;
      esac
    fi
    COMPREPLY=(); return
  fi
  local flags=""
  case "$cmd $sub" in
)",
                      flag_cases, R"(  esac
  if [[ -z "$flags" ]]; then
    case "$cmd" in
)",
                      [&] {
                        std::string single;
                        for (const Entry& e : kCommands)
                          if (std::string(e.words).find(' ') == std::string::npos)
                            absl::StrAppend(&single, "      ", e.words, ") flags=\"",
                                            absl::StrJoin(FlagsOf(e.text), " "), "\" ;;\n");
                        return single;
                      }(),
                      R"(    esac
  fi
  COMPREPLY=($(compgen -W "$flags" -- "$cur"))
}
complete -F _ferry ferry
)");
}

std::string ManPageText() {
  std::string commands;
  for (const Entry& e : kCommands) absl::StrAppend(&commands, Fill(e.text), "\n\n");
  return ManPage("ferry", 1, "move running VMs between hosts",
                 {{"SYNOPSIS", "ferry [--agent HOST:PORT] COMMAND [flags]"},
                  {"DESCRIPTION", OverviewHelp()},
                  {"COMMANDS", commands},
                  {"ENVIRONMENT",
                   "FERRY_AGENT      the agent address when --agent (or --from) is not given\n"
                   "FERRY_TLS_CA     --tls-ca\n"
                   "FERRY_TLS_CERT   --tls-cert\n"
                   "FERRY_TLS_KEY    --tls-key\n"
                   "FERRY_CONFIG     the config file (instead of the one under FILES)\n"
                   "Flags win over the environment, the environment over the config file."},
                  {"FILES",
                   "$XDG_CONFIG_HOME/ferry/config, else ~/.config/ferry/config:\n"
                   "one `key = value` a line (# comments); keys: agent, tls-ca, tls-cert,\n"
                   "tls-key, connect-timeout-ms."},
                  {"SEE ALSO", "ferryd(8), ferry-bench(1); docs/cli.md"}});
}

std::string VersionLine(const char* binary) { return absl::StrCat(binary, " ", FerryVersion()); }

}  // namespace ferry::cli
