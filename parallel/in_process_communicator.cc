#include "parallel/in_process_communicator.h"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strata::parallel {

enum class InProcessOp { kAllReduceSum, kAllGather, kBroadcast, kBarrier };

namespace {

const char* OpName(InProcessOp op) {
  switch (op) {
    case InProcessOp::kAllReduceSum:
      return "all_reduce";
    case InProcessOp::kAllGather:
      return "all_gather";
    case InProcessOp::kBroadcast:
      return "broadcast";
    case InProcessOp::kBarrier:
      return "barrier";
  }
  return "?";
}

}  // namespace

// Shared state of one group. A collective has two phases: members arrive and
// deposit their input (gathering), then, once all have arrived, each computes
// its output from the deposits and departs (scattering). The next collective
// may start gathering only after every member departed.
struct InProcessWorld::GroupState {
  GroupSpec spec;
  std::mutex mu;
  std::condition_variable cv;

  // Guarded by mu.
  absl::Status broken;  // OK while the group is healthy
  bool scattering = false;
  int arrived = 0;
  int departed = 0;
  InProcessOp op = InProcessOp::kBarrier;
  size_t bytes = 0;
  int root = 0;
  std::vector<bool> present;
  std::vector<std::vector<uint8_t>> deposits;
  std::vector<std::deque<std::vector<uint8_t>>> mailboxes;  // [src * size + dst]
};

namespace {

using GroupState = InProcessWorld::GroupState;

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(InProcessWorld* world, std::shared_ptr<GroupState> state, int rank)
      : world_(world), state_(std::move(state)), rank_(rank) {}

  const GroupSpec& group() const override { return state_->spec; }
  int rank() const override { return rank_; }

  absl::Status AllReduceSum(float* data, size_t n) override {
    return Collective(InProcessOp::kAllReduceSum, data, n * sizeof(float), 0,
                      [&](const std::vector<std::vector<uint8_t>>& deposits) {
                        // Sum in group-rank order so every member gets identical bits.
                        std::vector<float> sum(n, 0.0f);
                        for (const auto& deposit : deposits) {
                          const float* values = reinterpret_cast<const float*>(deposit.data());
                          for (size_t i = 0; i < n; ++i) sum[i] += values[i];
                        }
                        std::memcpy(data, sum.data(), n * sizeof(float));
                      });
  }

  absl::Status AllGather(const float* in, size_t n, float* out) override {
    return Collective(InProcessOp::kAllGather, in, n * sizeof(float), 0,
                      [&](const std::vector<std::vector<uint8_t>>& deposits) {
                        for (size_t r = 0; r < deposits.size(); ++r) {
                          std::memcpy(out + r * n, deposits[r].data(), n * sizeof(float));
                        }
                      });
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("broadcast root ", root, " is outside group ", group().DebugString()));
    }
    return Collective(InProcessOp::kBroadcast, rank_ == root ? data : nullptr, bytes, root,
                      [&](const std::vector<std::vector<uint8_t>>& deposits) {
                        if (rank_ != root) std::memcpy(data, deposits[root].data(), bytes);
                      });
  }

  absl::Status Barrier() override {
    return Collective(InProcessOp::kBarrier, nullptr, 0, 0,
                      [](const std::vector<std::vector<uint8_t>>&) {});
  }

  absl::Status Send(const void* data, size_t bytes, int peer) override {
    if (absl::Status s = CheckPeer(peer); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(state_->mu);
    if (absl::Status s = HealthLocked(); !s.ok()) return s;
    const uint8_t* begin = static_cast<const uint8_t*>(data);
    state_->mailboxes[rank_ * size() + peer].emplace_back(begin, begin + bytes);
    state_->cv.notify_all();
    return absl::OkStatus();
  }

  absl::Status Recv(void* data, size_t bytes, int peer) override {
    if (absl::Status s = CheckPeer(peer); !s.ok()) return s;
    std::unique_lock<std::mutex> lock(state_->mu);
    auto& mailbox = state_->mailboxes[peer * size() + rank_];
    absl::Status waited = WaitLocked(
        lock, [&] { return !mailbox.empty(); },
        [&] {
          return absl::StrCat("recv: no message from rank ", group().world_ranks[peer], " within ",
                              absl::FormatDuration(world_->collective_timeout()));
        });
    if (!waited.ok()) return waited;
    std::vector<uint8_t> message = std::move(mailbox.front());
    mailbox.pop_front();
    if (message.size() != bytes) {
      return BreakLocked(absl::InvalidArgumentError(
          absl::StrCat(Prefix(), "recv expected ", bytes, " bytes from rank ",
                       group().world_ranks[peer], " but it sent ", message.size())));
    }
    std::memcpy(data, message.data(), bytes);
    return absl::OkStatus();
  }

 private:
  using Finish = std::function<void(const std::vector<std::vector<uint8_t>>&)>;

  std::string Prefix() const {
    return absl::StrCat("in-process group ", group().DebugString(), ": ");
  }

  absl::Status CheckPeer(int peer) const {
    if (peer < 0 || peer >= size() || peer == rank_) {
      return absl::InvalidArgumentError(
          absl::StrCat(Prefix(), "invalid peer ", peer, " for group rank ", rank_));
    }
    return absl::OkStatus();
  }

  // REQUIRES: state_->mu held.
  absl::Status BreakLocked(absl::Status status) {
    if (state_->broken.ok()) state_->broken = status;
    state_->cv.notify_all();
    return state_->broken;
  }

  // REQUIRES: state_->mu held. The group's error, including a lost member.
  absl::Status HealthLocked() {
    if (!state_->broken.ok()) return state_->broken;
    for (int world_rank : group().world_ranks) {
      if (world_->IsLost(world_rank)) {
        return BreakLocked(absl::UnavailableError(
            absl::StrCat(Prefix(), "rank ", world_rank, " lost (its process is gone)")));
      }
    }
    return absl::OkStatus();
  }

  // Waits until `ready`, the group breaks, or the collective timeout passes
  // (which breaks the group with the message `describe_timeout` builds).
  template <typename Ready, typename Describe>
  absl::Status WaitLocked(std::unique_lock<std::mutex>& lock, Ready ready,
                          Describe describe_timeout) {
    const auto deadline =
        std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(world_->collective_timeout());
    while (true) {
      if (absl::Status s = HealthLocked(); !s.ok()) return s;
      if (ready()) return absl::OkStatus();
      if (state_->cv.wait_until(lock, deadline) == std::cv_status::timeout) {
        if (absl::Status s = HealthLocked(); !s.ok()) return s;
        if (ready()) return absl::OkStatus();
        return BreakLocked(absl::DeadlineExceededError(Prefix() + describe_timeout()));
      }
    }
  }

  std::string MissingRanksLocked() const {
    std::vector<int> missing;
    for (int r = 0; r < size(); ++r) {
      if (!state_->present[r]) missing.push_back(group().world_ranks[r]);
    }
    return absl::StrJoin(missing, ",");
  }

  absl::Status Collective(InProcessOp op, const void* input, size_t bytes, int root,
                          const Finish& finish) {
    std::unique_lock<std::mutex> lock(state_->mu);
    absl::Status status = WaitLocked(
        lock, [&] { return !state_->scattering; },
        [&] {
          return absl::StrCat(OpName(op), ": timed out after ",
                              absl::FormatDuration(world_->collective_timeout()),
                              " waiting for the previous collective to finish");
        });
    if (!status.ok()) return status;

    if (state_->arrived == 0) {
      state_->op = op;
      state_->bytes = bytes;
      state_->root = root;
    } else if (state_->op != op || state_->bytes != bytes || state_->root != root) {
      return BreakLocked(absl::InvalidArgumentError(
          absl::StrCat(Prefix(), "rank ", world_rank(), " called ", OpName(op), " (", bytes,
                       " bytes, root ", root, ") while others called ", OpName(state_->op), " (",
                       state_->bytes, " bytes, root ", state_->root, ")")));
    }
    const uint8_t* begin = static_cast<const uint8_t*>(input);
    if (begin != nullptr) {
      state_->deposits[rank_].assign(begin, begin + bytes);
    } else {
      state_->deposits[rank_].clear();
    }
    state_->present[rank_] = true;
    if (++state_->arrived == size()) {
      state_->scattering = true;
      state_->cv.notify_all();
    }

    status = WaitLocked(
        lock, [&] { return state_->scattering; },
        [&] {
          return absl::StrCat(OpName(op), ": timed out after ",
                              absl::FormatDuration(world_->collective_timeout()),
                              " waiting for ranks ", MissingRanksLocked());
        });
    if (!status.ok()) return status;

    finish(state_->deposits);
    if (++state_->departed == size()) {
      state_->scattering = false;
      state_->arrived = 0;
      state_->departed = 0;
      std::fill(state_->present.begin(), state_->present.end(), false);
      state_->cv.notify_all();
    }
    return absl::OkStatus();
  }

  InProcessWorld* world_;
  std::shared_ptr<GroupState> state_;
  const int rank_;
};

class InProcessFactory final : public CommunicatorFactory {
 public:
  InProcessFactory(InProcessWorld* world, int rank) : world_(world), rank_(rank) {}

  absl::StatusOr<std::unique_ptr<Communicator>> Create(const GroupSpec& group) override {
    return world_->Join(group, rank_);
  }

 private:
  InProcessWorld* world_;
  const int rank_;
};

}  // namespace

InProcessWorld::InProcessWorld(int world_size, absl::Duration collective_timeout)
    : world_size_(world_size),
      collective_timeout_(collective_timeout),
      lost_(new std::atomic<bool>[world_size]) {
  for (int r = 0; r < world_size; ++r) lost_[r] = false;
}

InProcessWorld::~InProcessWorld() = default;

std::unique_ptr<CommunicatorFactory> InProcessWorld::FactoryFor(int rank) {
  return std::make_unique<InProcessFactory>(this, rank);
}

absl::StatusOr<std::unique_ptr<Communicator>> InProcessWorld::Join(const GroupSpec& group,
                                                                   int world_rank) {
  const int group_rank = group.GroupRankOf(world_rank);
  if (group_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", world_rank, " is not a member of group ", group.DebugString()));
  }
  for (int r : group.world_ranks) {
    if (r < 0 || r >= world_size_) {
      return absl::InvalidArgumentError(absl::StrCat("group ", group.DebugString(), " names rank ",
                                                     r, " outside world size ", world_size_));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<GroupState>& state = groups_[group.name];
  if (state == nullptr) {
    state = std::make_shared<GroupState>();
    state->spec = group;
    state->present.assign(group.size(), false);
    state->deposits.resize(group.size());
    state->mailboxes.resize(group.size() * group.size());
  } else if (state->spec.world_ranks != group.world_ranks) {
    return absl::InvalidArgumentError(absl::StrCat("group ", group.name, " joined as ",
                                                   group.DebugString(), " but exists as ",
                                                   state->spec.DebugString()));
  }
  return std::make_unique<InProcessCommunicator>(this, state, group_rank);
}

void InProcessWorld::MarkRankLostForTest(int world_rank) {
  lost_[world_rank] = true;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, state] : groups_) {
    std::lock_guard<std::mutex> group_lock(state->mu);
    state->cv.notify_all();
  }
}

}  // namespace strata::parallel
