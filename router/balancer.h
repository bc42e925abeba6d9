// Balancing policies (--policy): which available backend gets a new call.
//
//   round_robin      - each backend in turn.
//   least_load       - power of two choices: two random candidates, the one
//                      with the lower load wins. Load = the backend's reported
//                      waiting + running requests (replica.proto; 0 before the
//                      first report) + the calls this router has in flight on
//                      it, which covers the time between two reports.
//   prefix_affinity  - cache-aware: the backend whose load report holds the
//                      longest prefix of the prompt's token ids (in KV blocks)
//                      wins unless its load exceeds the least loaded one's by
//                      more than `affinity_margin`; with no such backend, the
//                      prompt's "home" backend (rendezvous hashing of its
//                      first tokens, or first bytes of a text prompt) under the
//                      same margin; else least_load. The home choice depends
//                      only on the prompt and the backend set, so routers that
//                      share no state still send a group of prompts that share
//                      a prefix to the same backend before any report shows it.
//
// Session affinity: a call with a session key (metadata x-session-id) goes to
// the rendezvous-hash choice for that key among the available backends, under
// every policy, unless that backend is over the margin.
//
// Thread-safety: Pick may be called from any thread concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "router/backend.h"
#include "strata/v1/inference.pb.h"

namespace strata::router {

// What a balancer may know of a call.
struct RouteRequest {
  const v1::GenerateRequest* request = nullptr;  // null for unary calls
  std::string session_key;                       // empty: none
};

// Why a backend was chosen (logs and tests).
enum class PickReason { kRoundRobin, kLeastLoad, kSession, kPrefixHit, kPrefixHome };
std::string_view PickReasonName(PickReason reason);

struct Pick {
  size_t index = 0;  // into the candidates
  PickReason reason = PickReason::kLeastLoad;
};

class Balancer {
 public:
  virtual ~Balancer() = default;
  virtual std::string_view name() const = 0;
  // Whether Choose reads the request's prompt (text or token ids). When it
  // does not, the router never decodes the prompt: a large one is relayed
  // as bytes.
  virtual bool reads_prompt() const { return false; }
  // REQUIRES: `candidates` is not empty (all of them available).
  virtual Pick Choose(std::span<const std::shared_ptr<Backend>> candidates,
                      const RouteRequest& request) = 0;
};

struct BalancerOptions {
  // prefix_affinity and session affinity: how much more load (requests) the
  // preferred backend may carry than the least loaded one.
  double affinity_margin = 8.0;
  // prefix_affinity: tokens (or bytes of a text prompt) that pick the home backend.
  int32_t home_key_tokens = 64;
  int32_t home_key_bytes = 256;
};

// "round_robin", "least_load" or "prefix_affinity"; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::unique_ptr<Balancer>> CreateBalancer(std::string_view policy,
                                                         BalancerOptions options = {});

// The load the policies compare (see above).
double LoadScore(const Backend& backend);

// The KvBlockManager::HashBlock chain of the whole blocks of `token_ids`, at
// most `max_blocks` of them (the same function the workers use; replica.proto).
std::vector<uint64_t> PrefixBlockHashes(std::span<const int32_t> token_ids, int32_t block_size,
                                        size_t max_blocks);

// A 64-bit hash of a string key (session keys, text prompts, addresses).
uint64_t KeyHash(std::string_view text);

// Rendezvous (highest random weight) choice of `key` among `candidates`.
size_t RendezvousChoice(uint64_t key, std::span<const std::shared_ptr<Backend>> candidates);

}  // namespace strata::router
