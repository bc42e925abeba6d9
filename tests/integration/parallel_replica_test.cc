// Replicas sharded over tp × pp worker processes (Gloo on 127.0.0.1): greedy
// outputs equal the reference for every cut of the bundled model, a lost rank
// stops the whole replica (leader NOT_SERVING first, nothing left running),
// and a rank that differs from its leader is refused naming the difference.
#include <signal.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/inference_client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/child_process.h"
#include "tests/integration/reference_cases.h"
#include "tests/integration/test_servers.h"

namespace strata::testing {
namespace {

using grpc::health::v1::HealthCheckResponse;
using ::testing::AnyOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

TEST(ParallelReplicaTest, GreedyOutputsMatchTheReferenceForEveryTpAndPp) {
  const std::vector<ReferenceCase> references = LoadReference();
  for (int tp : {1, 2, 4}) {
    for (int pp : {1, 2, 3}) {  // pp = 3 splits the 5 layers 2, 2, 1
      SCOPED_TRACE(absl::StrCat("tp ", tp, " pp ", pp));
      TempDir logs;
      absl::StatusOr<ReplicaProcesses> replica =
          LaunchReplica(STRATA_MODEL_DIR, tp, pp, {}, logs.path());
      ASSERT_TRUE(replica.ok()) << replica.status();
      ASSERT_TRUE(WaitUntilServing(replica->ranks[0]).ok()) << replica->ranks[0].process->Stderr();
      absl::StatusOr<v1::ModelInfo> info =
          cli::InferenceClient(replica->ranks[0].address).GetModelInfo();
      ASSERT_TRUE(info.ok()) << info.status();
      EXPECT_EQ(info->tensor_parallel_size(), tp);
      EXPECT_EQ(info->pipeline_parallel_size(), pp);
      // All prompts at once: they share the replica's steps (batched), which
      // must not change any of them.
      std::vector<Generation> generations(references.size());
      std::vector<std::thread> clients;
      for (size_t i = 0; i < references.size(); ++i) {
        clients.emplace_back([&, i] {
          v1::GenerateRequest request = ReferenceRequest(references[i]);
          request.mutable_token_ids()->mutable_ids()->Add(references[i].prompt_ids.begin(),
                                                          references[i].prompt_ids.end());
          generations[i] = Generate(replica->ranks[0].address, request);
        });
      }
      for (std::thread& client : clients) client.join();
      for (size_t i = 0; i < references.size(); ++i) {
        SCOPED_TRACE(absl::StrCat("prompt '", references[i].prompt, "'"));
        ASSERT_TRUE(generations[i].status.ok()) << generations[i].status;
        EXPECT_THAT(generations[i].ids, ElementsAreArray(ExpectedIds(references[i])));
        EXPECT_EQ(generations[i].text, references[i].completion_text);
      }
      // Every rank exports its own step time split and the bytes it holds.
      for (int rank = 0; rank < tp * pp; ++rank) {
        absl::StatusOr<std::string> exposition =
            HttpGet(replica->ranks[rank].metrics_address, "/metrics");
        ASSERT_TRUE(exposition.ok()) << exposition.status();
        const std::string labels = absl::StrCat("{phase=\"compute\",rank=\"", rank, "\"}");
        const std::optional<double> compute =
            MetricValue(*exposition, "strata_rank_step_seconds_total" + labels);
        ASSERT_TRUE(compute.has_value()) << "rank " << rank << ":\n" << *exposition;
        EXPECT_GT(*compute, 0.0) << "rank " << rank;
        const std::optional<double> weights =
            MetricValue(*exposition, absl::StrCat("strata_rank_weight_bytes{rank=\"", rank, "\"}"));
        ASSERT_TRUE(weights.has_value()) << "rank " << rank;
        EXPECT_GT(*weights, 0.0);
        // A healthy replica: every op's collective errors at 0, on every rank.
        for (const char* op :
             {"all_reduce", "all_gather", "broadcast", "send", "recv", "barrier"}) {
          const std::optional<double> errors =
              MetricValue(*exposition, absl::StrCat("strata_rank_collective_errors_total{op=\"", op,
                                                    "\",rank=\"", rank, "\"}"));
          ASSERT_TRUE(errors.has_value()) << "rank " << rank << " op " << op;
          EXPECT_EQ(*errors, 0.0) << "rank " << rank << " op " << op;
        }
      }
      // The leader's engine observed each step it ran once, in every step histogram.
      absl::StatusOr<std::string> leader_exposition =
          HttpGet(replica->ranks[0].metrics_address, "/metrics");
      ASSERT_TRUE(leader_exposition.ok()) << leader_exposition.status();
      const std::optional<double> steps =
          MetricValue(*leader_exposition, "strata_engine_steps_total");
      ASSERT_TRUE(steps.has_value());
      EXPECT_GT(*steps, 0.0);
      for (const char* histogram :
           {"strata_engine_step_duration_seconds", "strata_engine_batch_tokens",
            "strata_engine_batch_sequences"}) {
        EXPECT_EQ(MetricValue(*leader_exposition, absl::StrCat(histogram, "_count")), steps)
            << histogram;
      }
      // A clean stop: the leader tells its followers, and every rank exits 0.
      replica->ranks[0].process->Signal(SIGTERM);
      for (ServerProcess& rank : replica->ranks) {
        EXPECT_EQ(rank.process->WaitForExit(std::chrono::seconds(15)), 0)
            << rank.process->name() << ": " << rank.process->Stderr();
      }
    }
  }
}

TEST(ParallelReplicaTest, RanksFindEachOtherFromALeaderWorkerSetEnvironment) {
  // Two pods of a LeaderWorkerSet group, two ranks per pod (one per GPU):
  // rank = LWS_WORKER_INDEX * 2 + --local-rank, tp 2 x pp 2.
  TempDir logs;
  const int store_port = FreePort();
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  for (int pod = 0; pod < 2; ++pod) {
    for (int local = 0; local < 2; ++local) {
      const std::string name = absl::StrCat("pod", pod, "-local", local);
      absl::StatusOr<std::unique_ptr<ChildProcess>> process =
          ChildProcess::Start({{"/usr/bin/env",
                                "LWS_LEADER_ADDRESS=127.0.0.1",
                                "LWS_GROUP_SIZE=2",
                                absl::StrCat("LWS_WORKER_INDEX=", pod),
                                WorkerBinary(),
                                "--model",
                                STRATA_MODEL_DIR,
                                "--listen",
                                "127.0.0.1:0",
                                "--metrics-listen",
                                "127.0.0.1:0",
                                "--threads",
                                "1",
                                "--tp",
                                "2",
                                "--pp",
                                "2",
                                "--ranks-per-pod",
                                "2",
                                "--local-rank",
                                absl::StrCat(local),
                                "--leader-port",
                                absl::StrCat(store_port)},
                               logs.path(),
                               name,
                               std::nullopt});
      ASSERT_TRUE(process.ok()) << process.status();
      ranks.push_back(*std::move(process));
    }
  }
  absl::StatusOr<std::string> line =
      ranks[0]->WaitForStdoutLine("strata-worker: listening on", std::chrono::seconds(30));
  ASSERT_TRUE(line.ok()) << line.status();
  const size_t on = line->find(" on ") + 4;
  const std::string address = line->substr(on, line->find(" metrics ") - on);
  ServerProcess leader{std::move(ranks[0]), address, ""};
  ASSERT_TRUE(WaitUntilServing(leader).ok()) << leader.process->Stderr() << ranks[3]->Stderr();
  const ReferenceCase reference = LoadReference()[1];
  v1::GenerateRequest request = ReferenceRequest(reference);
  request.mutable_token_ids()->mutable_ids()->Add(reference.prompt_ids.begin(),
                                                  reference.prompt_ids.end());
  const Generation generation = Generate(address, request);
  ASSERT_TRUE(generation.status.ok()) << generation.status;
  EXPECT_THAT(generation.ids, ElementsAreArray(ExpectedIds(reference)));
  EXPECT_THAT(ranks[3]->Stderr() + ranks[3]->Stdout(), HasSubstr("rank 3"));
}

// Health statuses a Watch stream delivers until the server goes away.
class HealthWatch {
 public:
  explicit HealthWatch(const std::string& address)
      : stub_(grpc::health::v1::Health::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    thread_ = std::thread([this] {
      grpc::health::v1::HealthCheckRequest request;
      auto reader = stub_->Watch(&context_, request);
      HealthCheckResponse response;
      while (reader->Read(&response)) {
        std::lock_guard<std::mutex> lock(mu_);
        statuses_.push_back(response.status());
      }
      reader->Finish();
    });
  }
  ~HealthWatch() {
    context_.TryCancel();
    thread_.join();
  }
  std::vector<HealthCheckResponse::ServingStatus> statuses() {
    std::lock_guard<std::mutex> lock(mu_);
    return statuses_;
  }

 private:
  std::unique_ptr<grpc::health::v1::Health::Stub> stub_;
  grpc::ClientContext context_;
  std::mutex mu_;
  std::vector<HealthCheckResponse::ServingStatus> statuses_;
  std::thread thread_;
};

TEST(ParallelReplicaTest, KillingAFollowerMidGenerationStopsTheWholeReplica) {
  TempDir logs;
  absl::StatusOr<ReplicaProcesses> replica = LaunchReplica(
      STRATA_MODEL_DIR, /*tp=*/2, /*pp=*/2, {"--collective-timeout", "5"}, logs.path());
  ASSERT_TRUE(replica.ok()) << replica.status();
  ServerProcess& leader = replica->ranks[0];
  ASSERT_TRUE(WaitUntilServing(leader).ok()) << leader.process->Stderr();
  HealthWatch watch(leader.address);

  // A long generation that is streaming when the rank dies.
  v1::GenerateRequest request;
  request.set_text("Once upon a time");
  request.mutable_stopping()->set_max_tokens(100000);
  request.mutable_stopping()->set_ignore_eos(true);
  std::optional<Generation> generation;
  std::thread client([&] { generation = Generate(leader.address, request); });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const auto killed_at = std::chrono::steady_clock::now();
  replica->ranks[3].process->Signal(SIGKILL);

  for (int rank = 0; rank < 3; ++rank) {
    ServerProcess& process = replica->ranks[rank];
    const std::optional<int> code = process.process->WaitForExit(std::chrono::seconds(10));
    ASSERT_TRUE(code.has_value()) << "rank " << rank << " still running 10 s after rank 3 died";
    EXPECT_NE(*code, 0) << "rank " << rank;
    EXPECT_THAT(process.process->Stderr(), HasSubstr("replica lost")) << "rank " << rank;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, std::chrono::seconds(10));
  client.join();
  ASSERT_TRUE(generation.has_value());
  EXPECT_EQ(generation->status.code(), absl::StatusCode::kUnavailable) << generation->status;
  EXPECT_GT(generation->responses, 0) << "the stream should have started before the kill";
  // A rank that shared a collective with rank 3 names it (which one sees it
  // first depends on where each was in the step).
  std::string survivors;
  for (int rank = 0; rank < 3; ++rank) survivors += replica->ranks[rank].process->Stderr();
  EXPECT_THAT(survivors, HasSubstr("rank 3 lost"));
  const std::vector<HealthCheckResponse::ServingStatus> statuses = watch.statuses();
  ASSERT_FALSE(statuses.empty());
  EXPECT_EQ(statuses.front(), HealthCheckResponse::SERVING);
  EXPECT_EQ(statuses.back(), HealthCheckResponse::NOT_SERVING)
      << "the leader must report NOT_SERVING before it exits";
}

// With the default collective timeout (30 s). The store sees a rank's death
// at once, and the leader asks it before each heartbeat (1 s), whatever its
// own step is doing: a Gloo send already pending to the dead rank would
// otherwise wait out the collective timeout.
TEST(ParallelReplicaTest, AFollowerKilledWhileIdleStopsTheReplicaWithinSeconds) {
  TempDir logs;
  absl::StatusOr<ReplicaProcesses> replica =
      LaunchReplica(STRATA_MODEL_DIR, /*tp=*/2, /*pp=*/1, {}, logs.path());
  ASSERT_TRUE(replica.ok()) << replica.status();
  ServerProcess& leader = replica->ranks[0];
  ASSERT_TRUE(WaitUntilServing(leader).ok()) << leader.process->Stderr();
  HealthWatch watch(leader.address);
  const auto killed_at = std::chrono::steady_clock::now();
  replica->ranks[1].process->Signal(SIGKILL);

  const std::optional<int> code = leader.process->WaitForExit(std::chrono::seconds(10));
  ASSERT_TRUE(code.has_value()) << "the leader still runs 10 s after rank 1 died";
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, std::chrono::seconds(5));
  EXPECT_NE(*code, 0);
  EXPECT_THAT(leader.process->Stderr(), HasSubstr("rank 1 lost (its process exited)"));
  const std::vector<HealthCheckResponse::ServingStatus> statuses = watch.statuses();
  ASSERT_FALSE(statuses.empty());
  EXPECT_EQ(statuses.back(), HealthCheckResponse::NOT_SERVING)
      << "the leader must report NOT_SERVING before it exits";
}

// What the kubelet does when a LeaderWorkerSet group goes: SIGTERM to every
// pod at once. Followers keep stepping while the leader drains, so the stream
// in flight completes; then the leader shuts the replica down and all exit 0.
TEST(ParallelReplicaTest, SigtermToEveryRankAtOnceLetsTheStreamInFlightFinish) {
  TempDir logs;
  absl::StatusOr<ReplicaProcesses> replica =
      LaunchReplica(STRATA_MODEL_DIR, /*tp=*/2, /*pp=*/2, {"--drain-timeout", "60"}, logs.path());
  ASSERT_TRUE(replica.ok()) << replica.status();
  ServerProcess& leader = replica->ranks[0];
  ASSERT_TRUE(WaitUntilServing(leader).ok()) << leader.process->Stderr();

  v1::GenerateRequest request;
  request.set_text("Once upon a time");
  request.mutable_stopping()->set_max_tokens(300);
  request.mutable_stopping()->set_ignore_eos(true);
  request.mutable_options()->set_return_token_ids(true);
  cli::InferenceClient client(leader.address, std::chrono::seconds(120));
  size_t tokens = 0;
  bool signalled = false;
  const absl::Status status = client.Generate(request, [&](const v1::GenerateResponse& response) {
    tokens += response.token_ids_size();
    if (!signalled) {
      for (ServerProcess& rank : replica->ranks) rank.process->Signal(SIGTERM);
      signalled = true;
    }
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(tokens, 300u) << "the stream must run to max_tokens through the drain";
  // Followers wait up to drain + teardown (70 s) for the leader's word:
  // exiting well before that means the leader shut the replica down.
  for (ServerProcess& rank : replica->ranks) {
    EXPECT_EQ(rank.process->WaitForExit(std::chrono::seconds(20)), 0)
        << rank.process->name() << ": " << rank.process->Stderr();
  }
}

TEST(ParallelReplicaTest, AFollowerThatHangsPastTheCollectiveTimeoutStopsTheReplica) {
  TempDir logs;
  absl::StatusOr<ReplicaProcesses> replica = LaunchReplica(
      STRATA_MODEL_DIR, /*tp=*/1, /*pp=*/2, {"--collective-timeout", "2"}, logs.path());
  ASSERT_TRUE(replica.ok()) << replica.status();
  ServerProcess& leader = replica->ranks[0];
  ASSERT_TRUE(WaitUntilServing(leader).ok()) << leader.process->Stderr();
  // Stopped, not dead: its connections stay open, only the timeout can tell.
  replica->ranks[1].process->Signal(SIGSTOP);
  const std::optional<int> code = leader.process->WaitForExit(std::chrono::seconds(10));
  replica->ranks[1].process->Signal(SIGCONT);
  ASSERT_TRUE(code.has_value()) << "the leader still runs 10 s after rank 1 hung";
  EXPECT_NE(*code, 0);
  EXPECT_THAT(leader.process->Stderr(), HasSubstr("replica lost"));
  const std::optional<int> follower =
      replica->ranks[1].process->WaitForExit(std::chrono::seconds(10));
  ASSERT_TRUE(follower.has_value()) << "the resumed follower must notice its leader is gone";
  EXPECT_NE(*follower, 0);
}

// Starts a two-rank replica whose rank 1 gets `rank1_flags` instead of the
// leader's tp = 2 shape, and expects both to refuse with `mismatch`.
void ExpectRefused(const std::vector<std::string>& rank1_flags, const std::string& mismatch) {
  TempDir logs;
  const std::string store = absl::StrCat("127.0.0.1:", FreePort());
  absl::StatusOr<ServerProcess> leader = LaunchWorker(
      STRATA_MODEL_DIR,
      {"--tp", "2", "--rank", "0", "--leader-address", store, "--bootstrap-timeout", "20"},
      logs.path(), "rank0");
  ASSERT_TRUE(leader.ok()) << leader.status();
  std::vector<std::string> flags = {"--rank", "1", "--leader-address", store, "--bootstrap-timeout",
                                    "20"};
  flags.insert(flags.end(), rank1_flags.begin(), rank1_flags.end());
  absl::StatusOr<ServerProcess> follower =
      LaunchWorker(STRATA_MODEL_DIR, flags, logs.path(), "rank1");
  ASSERT_TRUE(follower.ok()) << follower.status();
  for (ServerProcess* process : {&*leader, &*follower}) {
    const std::optional<int> code = process->process->WaitForExit(std::chrono::seconds(15));
    ASSERT_TRUE(code.has_value()) << process->process->name() << " was not refused";
    EXPECT_EQ(*code, 1);
  }
  EXPECT_THAT(follower->process->Stderr(), HasSubstr(mismatch));
  EXPECT_THAT(leader->process->Stderr(), HasSubstr(mismatch));
}

TEST(ParallelReplicaTest, ARankStartedWithAnotherShapeIsRefusedNamingIt) {
  ExpectRefused({"--tp", "1", "--pp", "2"}, "tp differs");
}

TEST(ParallelReplicaTest, ARankServingAnotherModelIsRefusedNamingIt) {
  ExpectRefused({"--tp", "2", "--random-weights"}, "model_hash differs");
}

}  // namespace
}  // namespace strata::testing
