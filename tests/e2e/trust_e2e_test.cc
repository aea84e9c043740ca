// Trust between agents, end to end with two real ferryd processes (issue:
// "Trust between agents"; docs/security.md's threat model names each test):
// - a stranger that answers a recovery with "never ran" cannot make the
//   source resume its VM while the real destination runs it (split brain);
// - a client holding only the pool token cannot take over a running
//   migration's stream by Reconnect, nor join it as a data stream;
// - a probe for migration ids with a wrong token learns nothing;
// - a certificate without the agent role (an operator's) cannot pose as a
//   destination, and a reachable TLS agent does not start without a CA for
//   its clients.
// Every migration is checked by digest at its destination.
#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/net.h"
#include "base/socket_testing.h"
#include "base/unique_fd.h"
#include "ferry/v1/migration.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/source_stream.h"
#include "migration/stream_auth.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ferry::v1::DestinationMessage;
using ferry::v1::MigrationResource;
using ferry::v1::SourceMessage;
using ::testing::HasSubstr;

constexpr char kToken[] = "pool-token-for-trust-tests";

// A stranger on the migration port: it answers every stream's first message
// with Error{never_ran} (and a proof it cannot have made).
class NeverRanStranger final
    : public ferry::v1::Migration::WithRawCallbackMethod_Migrate<ferry::v1::Migration::Service> {
 public:
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> *Migrate(
      grpc::CallbackServerContext *) override {
    ++streams;
    return new Reactor();
  }
  std::atomic<int> streams{0};

 private:
  class Reactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    Reactor() { StartRead(&in_); }
    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status::OK);
        return;
      }
      DestinationMessage m;
      m.mutable_error()->set_code(static_cast<int>(grpc::StatusCode::ABORTED));
      m.mutable_error()->set_message("migration failed here before it ran the VM");
      m.mutable_error()->set_never_ran(true);
      m.mutable_error()->set_never_ran_proof(std::string(32, 'x'));
      bool own = false;
      (void)grpc::SerializationTraits<DestinationMessage>::Serialize(m, &out_, &own);
      StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
    }
    void OnDone() override { delete this; }

   private:
    grpc::ByteBuffer in_, out_;
  };
};

class TrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<std::string> args = {"--migration-token", kToken};
    auto a = agent::AgentProcess::Start(Ferryd(), args, TempDir() + "/a.log");
    ASSERT_TRUE(a.ok()) << a.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    sa_ = Stub(a_->address());
    auto b = agent::AgentProcess::Start(Ferryd(), args, TempDir() + "/b.log");
    ASSERT_TRUE(b.ok()) << b.status();
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
    sb_ = Stub(b_->address());
  }

  // A postcopy migration of a 48 MiB zipf guest at 8 MB/s: seconds of
  // postcopy to act in (the test waits for the phase; speed only stretches
  // the run).
  MigrationResource StartPostcopy(const std::string &vm) {
    CreateVm(*sa_, VmRequest(vm, "zipf", 48ull << 20));
    grpc::ClientContext ctx;
    ferry::v1::StartMigrationRequest r;
    r.set_vm_name(vm);
    r.set_destination(b_->address());
    r.set_mode(ferry::v1::MIGRATION_MODE_POSTCOPY);
    r.set_max_bandwidth(8ull << 20);
    MigrationResource out;
    grpc::Status s = sa_->StartMigration(&ctx, r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    const MigrationResource p =
        AwaitPhase(*sa_, out.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY, 60000);
    EXPECT_EQ(p.phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY) << p.error();
    return out;
  }

  MigrationResource AwaitEnd(const std::string &id) {
    return AwaitPhase(*sa_, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 300000);
  }

  uint64_t SourceOps(const std::string &vm) {
    grpc::ClientContext ctx;
    ferry::v1::VmStatsRequest r;
    r.set_name(vm);
    ferry::v1::VmStatsResponse out;
    EXPECT_TRUE(sa_->VmStats(&ctx, r, &out).ok());
    uint64_t ops = 0;
    for (const auto &v : out.vcpus()) ops += v.ops();
    return ops;
  }

  std::unique_ptr<agent::AgentProcess> a_, b_;
  std::unique_ptr<ferry::v1::Control::Stub> sa_, sb_;
};

// The split brain the review found: `migration recover --to` a stranger
// that says "never ran". The source must keep its VM paused (the real
// destination runs it), and the migration goes on once pointed back.
TEST_F(TrustTest, AStrangersNeverRanDoesNotResumeTheSource) {
  NeverRanStranger stranger;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&stranger);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server && port > 0);
  const std::string fake = absl::StrCat("127.0.0.1:", port);

  const MigrationResource m = StartPostcopy("twice");
  CliResult r = RunCli({"migration", "recover", m.id(), "--agent", a_->address(), "--to", fake});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // The source asks the stranger (it answers never_ran, unproven) and
  // keeps asking: paused, never failed, never resumed.
  MigrationResource paused;
  for (int i = 0; i < 600; ++i) {
    paused = GetMigration(*sa_, m.id());
    if (stranger.streams.load() >= 2 &&
        paused.progress().paused_reason().find("never ran") != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(stranger.streams.load(), 2) << "the source did not try the stranger";
  EXPECT_EQ(paused.phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED) << paused.error();
  EXPECT_THAT(paused.progress().paused_reason(), HasSubstr("without proving"));
  const uint64_t before = SourceOps("twice");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(SourceOps("twice"), before) << "the source VM ran while the destination runs it";

  r = RunCli({"migration", "recover", m.id(), "--agent", a_->address(), "--to", b_->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const MigrationResource done = AwaitEnd(m.id());
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  EXPECT_TRUE(VerifyVm(*sb_, "twice"));
  server->Shutdown();
}

// A stream to the destination's migration port, and its first answer.
struct Probe {
  std::unique_ptr<migration::SourceStream> stream;
  DestinationMessage reply;
};

Probe Send(const std::string &address, const SourceMessage &first) {
  Probe p;
  auto s = migration::OpenMigrationStream(address, nullptr);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return p;
  p.stream = std::move(*s);
  EXPECT_TRUE(p.stream->Write(first));
  EXPECT_TRUE(p.stream->Read(&p.reply));
  return p;
}

// The hijack the review found: a client with the pool token and the
// migration id (from the destination's list) sends Reconnect, then page
// frames. Now it is challenged for the migration's secret, cannot answer,
// and is refused; the real stream is never disturbed (no reconnection) and
// the memory is right. The same for a data stream's Join, and a probe with
// a wrong token hears "wrong token" for a real and a made-up id alike.
TEST_F(TrustTest, OnlyThePoolTokenCannotTakeOverAMigration) {
  const MigrationResource m = StartPostcopy("hijacked");
  const std::string nonce(32, 'n');

  SourceMessage reconnect;
  reconnect.mutable_reconnect()->set_protocol_version(migration::kProtocolVersion);
  reconnect.mutable_reconnect()->set_migration_id(m.id());
  reconnect.mutable_reconnect()->set_auth_token(kToken);
  reconnect.mutable_reconnect()->set_attempt(1);
  reconnect.mutable_reconnect()->set_nonce(nonce);
  Probe p = Send(b_->address(), reconnect);
  ASSERT_TRUE(p.reply.has_challenge()) << p.reply.DebugString();
  SourceMessage guess;
  guess.mutable_stream_proof()->set_proof(std::string(32, 'g'));
  ASSERT_TRUE(p.stream->Write(guess));
  DestinationMessage refused;
  ASSERT_TRUE(p.stream->Read(&refused));
  ASSERT_TRUE(refused.has_error()) << refused.DebugString();
  EXPECT_EQ(refused.error().code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_THAT(refused.error().message(), HasSubstr("did not prove"));

  SourceMessage join;
  join.mutable_join()->set_migration_id(m.id());
  join.mutable_join()->set_auth_token(kToken);
  join.mutable_join()->set_index(1);
  join.mutable_join()->set_nonce(nonce);
  Probe j = Send(b_->address(), join);
  ASSERT_TRUE(j.reply.has_challenge()) << j.reply.DebugString();
  ASSERT_TRUE(j.stream->Write(guess));
  ASSERT_TRUE(j.stream->Read(&refused));
  EXPECT_EQ(refused.error().code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));

  // Credentials before lookup: the same answer for a real and a made-up id.
  for (const std::string &id : {m.id(), std::string("no-such-migration")}) {
    SourceMessage probe = reconnect;
    probe.mutable_reconnect()->set_migration_id(id);
    probe.mutable_reconnect()->set_auth_token("wrong");
    Probe w = Send(b_->address(), probe);
    ASSERT_TRUE(w.reply.has_error()) << id;
    EXPECT_EQ(w.reply.error().code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) << id;
    SourceMessage wrong_join = join;
    wrong_join.mutable_join()->set_migration_id(id);
    wrong_join.mutable_join()->set_auth_token("wrong");
    Probe wj = Send(b_->address(), wrong_join);
    EXPECT_EQ(wj.reply.error().code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) << id;
  }

  const MigrationResource done = AwaitEnd(m.id());
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  EXPECT_EQ(done.progress().reconnects(), 0u) << "the live stream was disturbed";
  EXPECT_TRUE(VerifyVm(*sb_, "hijacked"));
}

// Ids, names and addresses a caller supplies are bounded before they are
// echoed: a 1 MiB id or name, or a 14 KB address, gets a short error, and
// neither agent's log grows by it.
TEST_F(TrustTest, LongIdsNamesAndAddressesAreNotEchoed) {
  const std::string huge(1 << 20, 'i');
  const std::string address(14 << 10, 'h');
  {
    grpc::ClientContext ctx;
    ferry::v1::GetMigrationRequest r;
    r.set_id(huge);
    MigrationResource out;
    const grpc::Status s = sa_->GetMigration(&ctx, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_LT(s.error_message().size(), 200u) << s.error_message().substr(0, 200);
  }
  {
    grpc::ClientContext ctx;
    ferry::v1::RecoverMigrationRequest r;
    r.set_id("mig-1");
    r.set_destination(address);
    MigrationResource out;
    const grpc::Status s = sa_->RecoverMigration(&ctx, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_LT(s.error_message().size(), 200u) << s.error_message().substr(0, 200);
  }
  {
    grpc::ClientContext ctx;
    ferry::v1::GetVmRequest r;
    r.set_name(huge);
    ferry::v1::Vm out;
    const grpc::Status s = sa_->GetVm(&ctx, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_LT(s.error_message().size(), 200u) << s.error_message().substr(0, 200);
  }
  SourceMessage join;
  join.mutable_join()->set_migration_id(huge);
  join.mutable_join()->set_auth_token(kToken);
  join.mutable_join()->set_index(1);
  join.mutable_join()->set_nonce(std::string(32, 'n'));
  Probe j = Send(b_->address(), join);
  ASSERT_TRUE(j.reply.has_error());
  EXPECT_EQ(j.reply.error().code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_LT(j.reply.error().message().size(), 200u);
  SourceMessage reconnect;
  reconnect.mutable_reconnect()->set_protocol_version(migration::kProtocolVersion);
  reconnect.mutable_reconnect()->set_migration_id(huge);
  reconnect.mutable_reconnect()->set_auth_token(kToken);
  reconnect.mutable_reconnect()->set_nonce(std::string(32, 'n'));
  Probe r = Send(b_->address(), reconnect);
  ASSERT_TRUE(r.reply.has_error());
  EXPECT_LT(r.reply.error().message().size(), 200u);
  for (const char* log : {"/a.log", "/b.log"}) {
    std::ifstream in(TempDir() + log, std::ios::ate);
    EXPECT_LT(static_cast<int64_t>(in.tellg()), 64 << 10) << log << " grew by what it echoed";
  }
}

// A flood of unauthenticated connections on the source's fetch port while a
// hybrid migration faults pages over it: the flood is shed, the migration's
// lanes keep being served, and it completes with the right memory.
TEST_F(TrustTest, AFetchPortFloodDoesNotBreakAMigration) {
  ::ferry::testing::ScopedFdLimit fds(4096);
  if (!fds.ok()) GTEST_SKIP() << "needs 4096 file descriptors";
  const int fetch_port = FreePort();
  a_.reset();
  auto a = agent::AgentProcess::Start(
      Ferryd(),
      {"--migration-token", kToken, "--fetch-listen", absl::StrCat("127.0.0.1:", fetch_port)},
      TempDir() + "/a-flood.log");
  ASSERT_TRUE(a.ok()) << a.status();
  a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
  sa_ = Stub(a_->address());
  CreateVm(*sa_, VmRequest("flooded", "zipf", 48ull << 20));
  grpc::ClientContext ctx;
  ferry::v1::StartMigrationRequest r;
  r.set_vm_name("flooded");
  r.set_destination(b_->address());
  r.set_mode(ferry::v1::MIGRATION_MODE_HYBRID);
  r.set_max_bandwidth(8ull << 20);
  r.set_max_rounds(1);  // postcopy soon: demand faults on the fetch channel
  MigrationResource m;
  ASSERT_TRUE(sa_->StartMigration(&ctx, r, &m).ok());
  std::vector<UniqueFd> flood;
  for (int i = 0; i < 1100; ++i) {
    auto fd = ConnectTcp(absl::StrCat("127.0.0.1:", fetch_port), 2000);
    if (fd.ok()) flood.push_back(*std::move(fd));
  }
  EXPECT_GE(flood.size(), 1000u);
  const MigrationResource done = AwaitEnd(m.id());
  flood.clear();
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  EXPECT_TRUE(VerifyVm(*sb_, "flooded"));
}

// A requested recovery under a 1 MiB/s cap: the push's wait for bandwidth
// is interrupted, the source reconnects, and the migration completes with
// the right memory. (The wait's bound with minutes of demand-page debt is
// RateLimiter.AnInterruptEndsAWaitAtOnce; here the guard is a hang guard.)
TEST_F(TrustTest, ARecoveryUnderATinyCapIsNotHeldBack) {
  // 16 MiB, three quarters data: whatever the faults fetch at once, the
  // push waits out their debt at the 1 MiB/s floor before it can complete
  // (at least 12 s on any machine: the cap bounds how fast it goes), so the
  // request below always comes while it runs.
  CreateVm(*sa_, VmRequest("capped", "idle", 16ull << 20));
  grpc::ClientContext ctx;
  ferry::v1::StartMigrationRequest r;
  r.set_vm_name("capped");
  r.set_destination(b_->address());
  r.set_mode(ferry::v1::MIGRATION_MODE_POSTCOPY);
  r.set_max_bandwidth(1ull << 20);
  MigrationResource m;
  ASSERT_TRUE(sa_->StartMigration(&ctx, r, &m).ok());
  ASSERT_EQ(AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY, 60000).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the push is waiting for bandwidth
  CliResult c = RunCli({"migration", "recover", m.id(), "--agent", a_->address()});
  EXPECT_EQ(c.exit_code, 0) << c.out;
  MigrationResource now;
  for (int i = 0; i < 600; ++i) {
    now = GetMigration(*sa_, m.id());
    if (now.progress().reconnects() >= 1 || now.phase() == ferry::v1::MIGRATION_PHASE_COMPLETED)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GE(now.progress().reconnects(), 1u) << "no reconnection within a minute of the request";
  const MigrationResource done = AwaitEnd(m.id());
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  EXPECT_TRUE(VerifyVm(*sb_, "capped"));
}

// A CA, an agent's certificate (serverAuth and clientAuth), an operator's
// (no extendedKeyUsage), both for 127.0.0.1, and a monitor's (clientAuth),
// under `d`; each with CN=ferry-WHO.
bool MakeCertificates(const std::string& d) {
  if (RunCommand({"mkdir", "-p", d}).exit_code != 0) return false;
  const std::string ec = "ec:" + d + "/ecparams";
  std::ofstream(d + "/agent.cnf") << "subjectAltName=IP:127.0.0.1\n"
                                   << "extendedKeyUsage=serverAuth,clientAuth\n";
  std::ofstream(d + "/operator.cnf") << "subjectAltName=IP:127.0.0.1\n";
  std::ofstream(d + "/monitor.cnf") << "extendedKeyUsage=clientAuth\n";
  std::vector<std::vector<std::string>> steps = {
      {"openssl", "ecparam", "-name", "prime256v1", "-out", d + "/ecparams"},
      {"openssl", "req", "-x509", "-newkey", ec, "-nodes", "-keyout", d + "/ca.key", "-out",
       d + "/ca.pem", "-days", "1", "-subj", "/CN=ferry-test-ca"}};
  for (const std::string who : {"agent", "operator", "monitor"}) {
    steps.push_back({"openssl", "req", "-newkey", ec, "-nodes", "-keyout", d + "/" + who + ".key",
                     "-out", d + "/" + who + ".csr", "-subj", "/CN=ferry-" + who});
    steps.push_back({"openssl", "x509", "-req", "-in", d + "/" + who + ".csr", "-CA",
                     d + "/ca.pem", "-CAkey", d + "/ca.key", "-CAcreateserial", "-out",
                     d + "/" + who + ".pem", "-days", "1", "-extfile", d + "/" + who + ".cnf"});
  }
  for (const auto& step : steps) {
    CliResult r = RunCommand(step);
    EXPECT_EQ(r.exit_code, 0) << step[1] << ": " << r.out;
    if (r.exit_code != 0) return false;
  }
  return true;
}

// Under mutual TLS, an operator's certificate (signed by the pool's CA, but
// without the agent role) served by a stranger is refused as a destination
// during the TLS handshake: the migration fails before anything is sent,
// the stranger hears nothing, and the VM runs on at the source.
TEST(TrustTls, AnOperatorCertificateCannotPoseAsADestination) {
  if (RunCommand({"openssl", "version"}).exit_code != 0)
    GTEST_SKIP() << "the openssl tool is not installed: cannot make test certificates";
  const std::string d = TempDir() + "/roles";
  ASSERT_TRUE(MakeCertificates(d));
  auto tls = [&](const std::string& who) {
    return std::vector<std::string>{"--tls-cert", d + "/" + who + ".pem", "--tls-key",
                                    d + "/" + who + ".key", "--tls-ca", d + "/ca.pem"};
  };
  auto a = agent::AgentProcess::Start(Ferryd(), tls("agent"), TempDir() + "/roles-a.log");
  ASSERT_TRUE(a.ok()) << a.status();
  auto stranger =
      agent::AgentProcess::Start(Ferryd(), tls("operator"), TempDir() + "/roles-s.log");
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  auto cli = [&](std::vector<std::string> args) {
    const std::vector<std::string> t = tls("operator");
    args.insert(args.end(), t.begin(), t.end());
    return RunCli(args);
  };
  CliResult r = cli({"vm", "create", "s", "--agent", a->address(), "--memory", "16M"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // `--check` catches it first, in the TLS handshake, and starts nothing.
  r = cli({"migrate", "s", "--from", a->address(), "--to", stranger->address(), "--check"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, ::testing::ContainsRegex("FAIL +destination agent.*no extendedKeyUsage"))
      << r.out;
  r = cli({"migrate", "s", "--from", a->address(), "--to", stranger->address()});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("no extendedKeyUsage")) << "the refusal names the missing role";
  r = cli({"vm", "get", "s", "--agent", a->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("running"));
  r = cli({"migration", "list", "--agent", stranger->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("incoming"))) << "the stranger heard a migration";
}

// TLS on an address other hosts can reach needs the CA whose client
// certificates may call the agent: without --tls-ca, anyone could drive it.
TEST(TrustTls, AReachableTlsAgentWithoutACaDoesNotStart) {
  if (RunCommand({"openssl", "version"}).exit_code != 0)
    GTEST_SKIP() << "the openssl tool is not installed: cannot make test certificates";
  const std::string d = TempDir() + "/noca";
  ASSERT_TRUE(MakeCertificates(d));
  CliResult r = RunCommand({"timeout", "20", Ferryd(), "--listen", "0.0.0.0:0", "--tls-cert",
                            d + "/agent.pem", "--tls-key", d + "/agent.key",
                            "--migration-token", "t"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.exit_code, 124) << "it started: " << r.out;
  EXPECT_THAT(r.out, HasSubstr("--tls-ca"));
}

// Per-operation authorization (ferryd --authz): a monitoring identity may
// read but not create; an operator may create and migrate, but only to the
// agents the policy lists. Every refusal is PERMISSION_DENIED, says what is
// missing, and is logged with the identity.
TEST(TrustTls, EachCallIsAuthorizedForItsCertificate) {
  if (RunCommand({"openssl", "version"}).exit_code != 0)
    GTEST_SKIP() << "the openssl tool is not installed: cannot make test certificates";
  const std::string d = TempDir() + "/authz";
  ASSERT_TRUE(MakeCertificates(d));
  const std::vector<std::string> agent_tls = {"--tls-cert", d + "/agent.pem", "--tls-key",
                                              d + "/agent.key", "--tls-ca", d + "/ca.pem"};
  auto b = agent::AgentProcess::Start(Ferryd(), agent_tls, TempDir() + "/authz-b.log");
  ASSERT_TRUE(b.ok()) << b.status();
  std::ofstream(d + "/policy") << "# who may do what\n"
                               << "ferry-operator = read, vm, migrate\n"
                               << "ferry-monitor = read\n"
                               << "destinations = " << b->address() << "\n";
  std::vector<std::string> a_args = agent_tls;
  a_args.insert(a_args.end(), {"--authz", d + "/policy"});
  auto a = agent::AgentProcess::Start(Ferryd(), a_args, TempDir() + "/authz-a.log");
  ASSERT_TRUE(a.ok()) << a.status();
  auto as = [&](const std::string& who, std::vector<std::string> args) {
    args.insert(args.end(), {"--tls-cert", d + "/" + who + ".pem", "--tls-key",
                             d + "/" + who + ".key", "--tls-ca", d + "/ca.pem"});
    return RunCli(args);
  };
  CliResult r = as("monitor", {"vm", "list", "--agent", a->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = as("monitor", {"vm", "create", "m", "--agent", a->address(), "--memory", "16M"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("lacks the 'vm' permission"));
  r = as("operator", {"vm", "create", "m", "--agent", a->address(), "--memory", "16M"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // Changing a VM's memory is a VM right; the map stays as it was (and
  // the VM may still be migrated below).
  r = as("monitor", {"vm", "resize", "m", "--agent", a->address(), "--memory", "32M"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("lacks the 'vm' permission"));
  r = as("monitor", {"vm", "get", "m", "--agent", a->address(), "--json"});
  EXPECT_THAT(r.out, HasSubstr("\"memory_changes\":0")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\"memory_bytes\":16777216")) << r.out;

  r = as("monitor", {"migrate", "m", "--from", a->address(), "--to", b->address()});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("lacks the 'migrate' permission"));
  // Another agent address than the one allowed (nothing listens there: the
  // refusal comes first).
  r = as("operator", {"migrate", "m", "--from", a->address(), "--to",
                      absl::StrCat("127.0.0.1:", FreePort())});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("may go only to"));
  r = as("operator", {"migrate", "m", "--from", a->address(), "--to", b->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::ifstream in(TempDir() + "/authz-a.log");
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(log, HasSubstr("event=authz.denied identity=ferry-monitor"));
}

}  // namespace
}  // namespace ferry::e2e
