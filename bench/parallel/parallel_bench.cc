// strata-parallel-bench: runs one replica of tp x pp ranks (threads of this
// process, each with its own Gloo communicators over 127.0.0.1, exactly as
// separate worker processes would connect) and reports, per pipeline stage,
// how the wall time of a run splits into compute, TP collectives, pipeline
// transfer and idle time, for decode and prefill, with 1 and with pp
// micro-batches in flight.
//
//   strata-parallel-bench --tp 2 --pp 2                      # bundled model
//   strata-parallel-bench --tp 2 --pp 2 --large --batch 8    # TinyLlama-1.1B shape, random weights
//
// Definitions, per rank over the measured run: compute = time in Forward
// minus communication; TP = all-reduces and the logits all-gather (this
// includes waiting for the slowest TP peer); PP send = handing activations to
// the next stage; idle = the rest of the wall time (waiting for the previous
// stage's activations, or for a plan). A stage's figures are its TP ranks'
// average.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "parallel/bootstrap.h"
#include "spdlog/spdlog.h"
#include "worker/distributed/replica.h"
#include "worker/model/llama_model.h"
#include "worker/model/model.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string model_dir = STRATA_MODEL_DIR;
  bool random_weights = false;
  int tp = 2;
  int pp = 2;
  int batch = 8;            // decode sequences
  int context = 32;         // prompt tokens each sequence starts with
  int decode_steps = 32;    // decode tokens per sequence
  int prefill_tokens = 64;  // per sequence in the prefill measurement
  int threads = 1;          // kernel threads per rank
  int block_size = 16;
};

// One sequence of the synthetic workload: its block table and length.
struct BenchSequence {
  std::vector<int32_t> blocks;
  int32_t length = 0;
};

model::ForwardBatch MakeBatch(std::vector<BenchSequence*> sequences, int tokens_each, int vocab,
                              std::mt19937& rng) {
  model::ForwardBatch batch;
  for (BenchSequence* s : sequences) {
    model::BatchSequence entry;
    entry.first_token = batch.num_tokens();
    entry.num_tokens = tokens_each;
    entry.context_len = s->length + tokens_each;
    entry.block_table = s->blocks;
    for (int i = 0; i < tokens_each; ++i) {
      batch.token_ids.push_back(static_cast<int32_t>(rng() % vocab));
      batch.positions.push_back(s->length + i);
    }
    s->length += tokens_each;
    batch.sequences.push_back(std::move(entry));
  }
  return batch;
}

struct Phase {
  std::string name;
  double wall_seconds = 0;
  int64_t tokens = 0;
  std::vector<model::ForwardTimings> ranks;
};

void PrintPhase(const Phase& phase, int tp, int pp) {
  std::printf("\n%s: %.3f s, %lld tokens, %.1f tokens/s\n", phase.name.c_str(), phase.wall_seconds,
              static_cast<long long>(phase.tokens), phase.tokens / phase.wall_seconds);
  std::printf("  stage | compute | TP coll. | PP send | idle (PP wait + plan wait) | steps\n");
  for (int stage = 0; stage < pp; ++stage) {
    double compute = 0, collective = 0, send = 0, idle = 0;
    uint64_t steps = 0;
    for (int t = 0; t < tp; ++t) {
      const model::ForwardTimings& r = phase.ranks[stage * tp + t];
      compute += r.compute_seconds();
      collective += r.tp_collective_seconds;
      send += r.pp_send_seconds;
      idle += phase.wall_seconds - r.forward_seconds + r.pp_receive_seconds;
      steps = r.steps;
    }
    const double w = phase.wall_seconds * tp / 100.0;
    std::printf("  %5d | %6.1f%% | %7.1f%% | %6.1f%% | %25.1f%% | %llu\n", stage, compute / w,
                collective / w, send / w, idle / w, static_cast<unsigned long long>(steps));
  }
}

int Run(const BenchOptions& options) {
  const int world = options.tp * options.pp;
  parallel::BootstrapConfig bootstrap;
  bootstrap.source = parallel::BootstrapSource::kFlags;
  bootstrap.tp = options.tp;
  bootstrap.pp = options.pp;
  bootstrap.world_size = world;
  bootstrap.leader_address = "127.0.0.1:0";
  bootstrap.collective_timeout = absl::Seconds(120);
  bootstrap.bootstrap_timeout = absl::Seconds(120);

  const int sequences_needed = options.batch * 2;  // decode batch, then the prefill batch
  const int max_length = options.context + options.decode_steps + options.prefill_tokens + 1;
  const int blocks_per_sequence = (max_length + options.block_size - 1) / options.block_size;

  model::LoadOptions load;
  load.model_dir = options.model_dir;
  load.random_weights = options.random_weights;
  load.num_threads = options.threads;
  load.kv_block_size = options.block_size;
  load.kv_num_blocks = sequences_needed * blocks_per_sequence;

  // The leader binds its store first (port 0); the others learn the port.
  std::vector<std::unique_ptr<distributed::ReplicaRank>> ranks(world);
  std::vector<absl::Status> start_status(world);
  {
    // Every rank must be told the store's address up front (ranks retry
    // until the leader listens): take a port that is free now.
    const int port = [] {
      const int fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(a);
      bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
      const int p = ntohs(a.sin_port);
      close(fd);
      return p;
    }();
    std::vector<std::thread> starters;
    for (int rank = 0; rank < world; ++rank) {
      starters.emplace_back([&, rank] {
        distributed::ReplicaOptions replica;
        replica.bootstrap = bootstrap;
        replica.bootstrap.rank = rank;
        replica.bootstrap.leader_address = absl::StrCat("127.0.0.1:", port);
        replica.model = load;
        absl::StatusOr<std::unique_ptr<distributed::ReplicaRank>> started =
            distributed::ReplicaRank::Start(replica);
        if (started.ok()) {
          ranks[rank] = *std::move(started);
        } else {
          start_status[rank] = started.status();
        }
      });
    }
    for (std::thread& t : starters) t.join();
  }
  for (int rank = 0; rank < world; ++rank) {
    if (!start_status[rank].ok()) {
      std::fprintf(stderr, "strata-parallel-bench: rank %d: %s\n", rank,
                   std::string(start_status[rank].message()).c_str());
      return 1;
    }
  }
  std::vector<model::LlamaModel*> shards(world);
  for (int rank = 0; rank < world; ++rank) {
    shards[rank] = dynamic_cast<model::LlamaModel*>(&ranks[rank]->shard_model());
  }
  const model::ModelConfig config = ranks[0]->shard_model().config();
  std::printf(
      "%s: %s, %.0fM parameters, tp %d x pp %d over Gloo on 127.0.0.1, %d kernel "
      "thread(s) per rank, %u cores\n",
      options.random_weights ? "random weights" : "model", options.model_dir.c_str(),
      static_cast<double>(config.ParameterCount()) / 1e6, options.tp, options.pp, options.threads,
      std::thread::hardware_concurrency());

  std::vector<std::thread> followers;
  for (int rank = 1; rank < world; ++rank) {
    followers.emplace_back([&, rank] {
      absl::Status status = ranks[rank]->RunFollower();
      if (!status.ok()) {
        std::fprintf(stderr, "rank %d: %s\n", rank, std::string(status.message()).c_str());
        std::exit(1);
      }
      ranks[rank].reset();  // disconnects from the leader's store
    });
  }
  std::unique_ptr<model::Model> leader =
      distributed::ReplicaRank::MakeLeaderModel(std::move(ranks[0]), [](const absl::Status& s) {
        std::fprintf(stderr, "replica failed: %s\n", std::string(s.message()).c_str());
      });

  std::vector<BenchSequence> sequences(sequences_needed);
  for (int s = 0; s < sequences_needed; ++s) {
    for (int b = 0; b < blocks_per_sequence; ++b) {
      sequences[s].blocks.push_back(s * blocks_per_sequence + b);
    }
  }
  std::mt19937 rng(1);
  std::vector<float> logits;
  auto reset = [&] {
    for (model::LlamaModel* shard : shards) shard->ResetTimings();
  };
  auto collect = [&](Phase& phase, Clock::time_point start) {
    phase.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (model::LlamaModel* shard : shards) phase.ranks.push_back(shard->timings());
  };

  // Prompts of the decode batch, one micro-batch per sequence group.
  std::vector<BenchSequence*> decode_batch;
  for (int s = 0; s < options.batch; ++s) decode_batch.push_back(&sequences[s]);
  for (BenchSequence* s : decode_batch) {
    if (absl::Status st =
            leader->Forward(MakeBatch({s}, options.context, config.vocab_size, rng), logits);
        !st.ok()) {
      std::fprintf(stderr, "prompt: %s\n", std::string(st.message()).c_str());
      return 1;
    }
  }

  // Runs `steps` rounds over `groups` (each a micro-batch of sequences),
  // with up to `in_flight` batches outstanding.
  auto run = [&](const std::string& name, std::vector<std::vector<BenchSequence*>> groups,
                 int tokens_each, int rounds, int in_flight) -> Phase {
    Phase phase;
    phase.name = name;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // every rank idle
    reset();
    const Clock::time_point start = Clock::now();
    int outstanding = 0;
    for (int round = 0; round < rounds; ++round) {
      for (auto& group : groups) {
        if (outstanding == in_flight) {
          if (!leader->FinishForward(logits).ok()) std::exit(1);
          --outstanding;
        }
        const model::ForwardBatch batch = MakeBatch(group, tokens_each, config.vocab_size, rng);
        if (in_flight == 1) {
          if (!leader->Forward(batch, logits).ok()) std::exit(1);
        } else {
          if (!leader->StartForward(batch).ok()) std::exit(1);
          ++outstanding;
        }
        phase.tokens += static_cast<int64_t>(group.size()) * tokens_each;
      }
    }
    while (outstanding-- > 0) {
      if (!leader->FinishForward(logits).ok()) std::exit(1);
    }
    collect(phase, start);
    return phase;
  };
  auto split = [](std::vector<BenchSequence*> all, int parts) {
    std::vector<std::vector<BenchSequence*>> groups(parts);
    for (size_t i = 0; i < all.size(); ++i) groups[i % parts].push_back(all[i]);
    return groups;
  };

  const int pp = options.pp;
  const int half = options.decode_steps / 2;
  PrintPhase(run(absl::StrCat("decode, batch ", options.batch, ", 1 batch in flight"),
                 {decode_batch}, 1, half, 1),
             options.tp, pp);
  if (pp > 1) {
    PrintPhase(
        run(absl::StrCat("decode, batch ", options.batch, " as ", pp, " micro-batches in flight"),
            split(decode_batch, pp), 1, options.decode_steps - half, pp),
        options.tp, pp);
  }
  std::vector<BenchSequence*> prefill_batch;
  for (int s = options.batch; s < 2 * options.batch; ++s) prefill_batch.push_back(&sequences[s]);
  const int chunk = options.prefill_tokens / 2;
  PrintPhase(
      run(absl::StrCat("prefill, ", options.batch, " x ", chunk, " tokens, 1 batch in flight"),
          {prefill_batch}, chunk, 1, 1),
      options.tp, pp);
  if (pp > 1) {
    PrintPhase(run(absl::StrCat("prefill, ", options.batch, " x ", chunk, " tokens as ", pp,
                                " micro-batches in flight"),
                   split(prefill_batch, pp), chunk, 1, pp),
               options.tp, pp);
  }
  leader.reset();  // tells the followers to stop
  for (std::thread& t : followers) t.join();
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  strata::BenchOptions options;
  bool large = false;
  CLI::App app{"strata-parallel-bench: step time split of a tp x pp replica over Gloo"};
  app.add_option("--model", options.model_dir, "model folder (default: the bundled model)");
  app.add_flag("--large", large, "TinyLlama-1.1B shape with random BF16 weights");
  app.add_option("--tp", options.tp)->capture_default_str();
  app.add_option("--pp", options.pp)->capture_default_str();
  app.add_option("--batch", options.batch, "decode sequences")->capture_default_str();
  app.add_option("--context", options.context, "prompt tokens per sequence")->capture_default_str();
  app.add_option("--decode-steps", options.decode_steps)->capture_default_str();
  app.add_option("--prefill-tokens", options.prefill_tokens, "prefill tokens per sequence")
      ->capture_default_str();
  app.add_option("--threads", options.threads, "kernel threads per rank")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (large) {
    options.model_dir = std::string(STRATA_BENCH_CONFIG_DIR) + "/tinyllama-1.1b";
    options.random_weights = true;
  }
  spdlog::set_level(spdlog::level::warn);
  return strata::Run(options);
}
