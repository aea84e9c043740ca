#include "migration/preflight.h"

#include <atomic>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "migration/convert.h"
#include "migration/fetch/page_server.h"
#include "migration/fetch/remote_page_source.h"
#include "migration/hello.h"
#include "migration/protocol.h"
#include "migration/source_session.h"
#include "migration/stream_auth.h"
#include "sys/kvm.h"

namespace ferry::migration {
namespace {

CheckItem Pass(std::string name, std::string detail) {
  return {std::move(name), true, std::move(detail)};
}
CheckItem Fail(std::string name, std::string detail) {
  return {std::move(name), false, std::move(detail)};
}

std::string Mib(uint64_t bytes) { return absl::StrFormat("%.0f MiB", bytes / 1048576.0); }

// /proc/meminfo's MemAvailable, in bytes; 0 if it cannot be read.
uint64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kib << 10;
  }
  return 0;
}

// At most kMaxCheckTextBytes, cut at a UTF-8 character's start (a proto3
// string must stay valid UTF-8).
std::string Bounded(const std::string& s) {
  if (s.size() <= kMaxCheckTextBytes) return s;
  size_t n = kMaxCheckTextBytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

std::string CheckId() {
  fetch::Secret r;
  if (!fetch::RandomBytes(absl::MakeSpan(r)).ok()) return "check";
  std::string id = "check-";
  for (int i = 0; i < 8; ++i) absl::StrAppendFormat(&id, "%02x", r[i]);
  return id;
}

}  // namespace

bool AllPassed(const std::vector<CheckItem>& items) {
  for (const CheckItem& i : items)
    if (!i.ok) return false;
  return true;
}

ferry::v1::CheckItem ToProto(const CheckItem& item) {
  ferry::v1::CheckItem p;
  p.set_name(item.name);
  p.set_ok(item.ok);
  p.set_detail(item.detail);
  return p;
}

std::vector<CheckItem> FromProto(const ferry::v1::CheckResult& result) {
  std::vector<CheckItem> out;
  for (const ferry::v1::CheckItem& p : result.items()) {
    if (static_cast<int>(out.size()) == kMaxCheckItems) {
      out.push_back(
          Fail("destination answer", absl::StrFormat("%d checks, more than the %d a source reads",
                                                     result.items_size(), kMaxCheckItems)));
      break;
    }
    out.push_back({Bounded(p.name()), p.ok(), Bounded(p.detail())});
  }
  if (out.empty()) out.push_back(Fail("destination answer", "the destination ran no check"));
  return out;
}

std::vector<CheckItem> CheckHost(const vmm::VmConfig& config, vmm::FaultMode requested) {
  std::vector<CheckItem> items;
  const uint64_t available = MemAvailableBytes();
  const uint64_t needs = vmm::CreatedMemoryBytes(config);  // what its regions hold
  if (available >= needs)
    items.push_back(
        Pass("free memory", absl::StrCat(Mib(available), " available, the VM needs ", Mib(needs))));
  else
    items.push_back(
        Fail("free memory",
             absl::StrCat("only ", Mib(available), " available (MemAvailable), the VM needs ",
                          Mib(needs), ": it would run this host out of memory")));
  bool exit_on_missing = false;
  if (config.backend == vmm::VmBackend::kKvm) {
    absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();
    if (!kvm.ok()) {
      items.push_back(Fail("backend", absl::StrCat("the VM runs on KVM, and KVM is not usable "
                                                   "here: ",
                                                   kvm.status().message())));
      return items;
    }
    exit_on_missing = kvm->caps().exit_on_missing;
    items.push_back(Pass("backend", absl::StrCat("KVM: ", kvm->caps().ToString())));
  } else {
    items.push_back(Pass("backend", "software vCPUs (run anywhere)"));
  }
  const vmm::FaultModeChoice c = vmm::ChooseFaultMode(config.backend, exit_on_missing, requested);
  // Exit mode falls back to blocking where KVM cannot exit: the migration
  // runs, slower to fault; the item says so but passes.
  items.push_back(Pass("fault mode", absl::StrCat(vmm::FaultModeName(c.mode), ": ", c.reason)));
  return items;
}

std::vector<CheckItem> CheckIncoming(const ferry::v1::Hello& hello,
                                     const std::string& expected_token,
                                     const AdmitCheckFn& admit_check) {
  std::vector<CheckItem> items;
  if (hello.protocol_version() != kProtocolVersion) {
    items.push_back(Fail("protocol version",
                         absl::StrFormat("the source speaks version %d, this destination %d: "
                                         "upgrade the older agent",
                                         hello.protocol_version(), kProtocolVersion)));
    return items;
  }
  items.push_back(Pass("protocol version", absl::StrFormat("%d on both ends", kProtocolVersion)));
  if (!expected_token.empty() && !TokensEqual(hello.auth_token(), expected_token)) {
    items.push_back(Fail("token",
                         "wrong migration token: give the source agent the "
                         "destination's token (--migration-token-file)"));
    return items;
  }
  items.push_back(Pass(
      "token", expected_token.empty() ? "this agent requires none" : "the destination's token"));
  absl::StatusOr<ValidHello> valid = ValidateHello(hello);
  if (!valid.ok()) {
    items.push_back(Fail("hello", std::string(valid.status().message())));
    return items;
  }
  items.push_back(Pass(
      "hello", absl::StrFormat("%s of VM '%s' (%s, %d vCPUs, %s)", MigrationModeName(valid->mode),
                               valid->name, Mib(valid->config.memory_bytes), valid->config.vcpus,
                               vmm::VmBackendName(valid->config.backend))));
  if (admit_check) {
    std::vector<CheckItem> admit = admit_check(valid->name, valid->config);
    items.insert(items.end(), admit.begin(), admit.end());
  }
  std::vector<CheckItem> host = CheckHost(valid->config, valid->fault_mode);
  items.insert(items.end(), host.begin(), host.end());
  if (valid->mode == MigrationMode::kPrecopy) {
    items.push_back(Pass("fetch channel", "not used: a precopy migration demand-pages nothing"));
    return items;
  }
  fetch::FetcherOptions fo;
  fo.address = hello.fetch_address();
  fo.migration_id = hello.migration_id();
  fo.secret = valid->secret;
  fo.page_size = valid->config.page_size;
  fo.encrypt = hello.fetch_encrypted();
  fetch::RemotePageSource fetcher(fo);
  if (absl::Status s = fetcher.Preconnect(1); s.ok())
    items.push_back(
        Pass("fetch channel", absl::StrCat("the source's page server at ", hello.fetch_address(),
                                           " answered and proved the handshake")));
  else
    items.push_back(
        Fail("fetch channel",
             absl::StrCat("the source's page server at ", hello.fetch_address(), ": ", s.message(),
                          " (is --fetch-advertise reachable from here?)")));
  fetcher.ReleaseLanes();
  return items;
}

std::vector<CheckItem> CheckDestination(const vmm::Vm& vm, const SourceConfig& config,
                                        absl::Duration timeout) {
  std::vector<CheckItem> items;
  const std::string where = absl::StrCat("the destination agent at ", config.destination);
  if (config.page_server == nullptr) {
    items.push_back(Fail("fetch channel", "this agent has no page server"));
    return items;
  }
  // The destination proves the fetch handshake against a throwaway
  // registration: never serving, gone when the check returns.
  const std::string id = CheckId();
  fetch::Secret secret;
  if (absl::Status s = fetch::RandomBytes(absl::MakeSpan(secret)); !s.ok()) {
    items.push_back(Fail("secret", std::string(s.message())));
    return items;
  }
  auto served = std::make_shared<fetch::ServedMigration>(
      id, secret, &vm.memory(), [](uint64_t, uint32_t) {}, config.encrypt_fetch);
  config.page_server->Register(served);
  struct Unregister {
    fetch::PageServer* server;
    std::shared_ptr<fetch::ServedMigration> served;
    ~Unregister() {
      server->Unregister(served->id());
      served->Close();
    }
  } unregister{config.page_server, served};

  absl::StatusOr<std::unique_ptr<SourceStream>> stream =
      config.open_stream ? config.open_stream()
                         : OpenMigrationStream(config.destination, config.credentials);
  if (!stream.ok()) {
    items.push_back(
        Fail("destination agent", absl::StrCat(where, ": ", stream.status().message())));
    return items;
  }
  const HelloParams p = HelloParamsFor(config, id);  // what the migration would announce
  ferry::v1::SourceMessage m;
  *m.mutable_check() = MakeHello(vm, p, secret);

  // A destination that never answers must not hold the check.
  absl::Notification answered;
  SourceStream* raw = stream->get();
  std::atomic<bool> timed_out{false};
  std::thread watchdog([&] {
    if (answered.WaitForNotificationWithTimeout(timeout)) return;
    timed_out = true;
    raw->Cancel();
  });
  ferry::v1::DestinationMessage reply;
  const bool got = raw->Write(m) && raw->Read(&reply);
  if (got) raw->WritesDone();  // the destination ends the stream after its answer
  const absl::Status ended = raw->Finish();
  answered.Notify();
  watchdog.join();
  const std::string transport =
      config.credentials != nullptr ? "over TLS, its certificate verified" : "in plaintext";
  if (!got) {
    items.push_back(Fail(
        "destination agent",
        timed_out ? absl::StrCat(where, " did not answer within ", absl::FormatDuration(timeout))
                  : absl::StrCat(where, ": ", ended.ok() ? "the stream ended" : ended.message())));
    return items;
  }
  if (reply.has_error()) {
    items.push_back(Pass("destination agent", absl::StrCat("reached ", where, " ", transport)));
    const std::string& msg = reply.error().message();
    if (absl::StrContains(msg, "unknown source message"))
      items.push_back(Fail("destination version",
                           "the destination agent is older and cannot run checks: upgrade it"));
    else
      items.push_back(Fail("destination", Bounded(msg)));
    return items;
  }
  if (!reply.has_check_result()) {
    items.push_back(
        Fail("destination agent", absl::StrCat(where, " answered the check with something else")));
    return items;
  }
  items.push_back(Pass("destination agent", absl::StrCat("reached ", where, " ", transport)));
  std::vector<CheckItem> theirs = FromProto(reply.check_result());
  items.insert(items.end(), theirs.begin(), theirs.end());
  return items;
}

}  // namespace ferry::migration
