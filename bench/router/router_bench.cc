// strata-router-bench: what the router adds, measured against fast fake
// replicas (no model: each Generate streams N canned tokens at once).
//
// It starts the fake replicas (this binary with --fake-replica), a
// strata-router over them and, when an nginx binary is given (--nginx),
// nginx as a plain grpc_pass proxy over the same replicas, then measures for
// each target in the same run:
//   - TTFT at concurrency 1: p50/p99, and the router's added latency
//     (through the router minus direct to a replica);
//   - requests/s with --concurrency streams in flight for --seconds;
//   - the same with prompts of --large-prompt-tokens token ids (~220 KB);
//   - for both loads, the CPU time per request of the proxy (router or nginx)
//     and of the fake replicas. On a shared 2-core machine requests/s moves
//     with whatever else runs; CPU per request is the steadier figure.
// Prints one line per measurement and a JSON summary to stdout.
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/server_process.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

// ---- the fake replica ------------------------------------------------------

class FakeReplica final : public strata::v1::Inference::CallbackService {
 public:
  explicit FakeReplica(int tokens) : tokens_(tokens) {}

  grpc::ServerWriteReactor<strata::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext*, const strata::v1::GenerateRequest* request) override {
    class Stream final : public grpc::ServerWriteReactor<strata::v1::GenerateResponse> {
     public:
      Stream(int tokens, int prompt_tokens) : left_(tokens), prompt_tokens_(prompt_tokens) {
        Next();
      }
      void OnWriteDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status::CANCELLED);
          return;
        }
        Next();
      }
      void OnDone() override { delete this; }

     private:
      void Next() {
        if (left_ == 0) {
          Finish(grpc::Status::OK);
          return;
        }
        response_.Clear();
        response_.set_text(" token");
        response_.add_token_ids(42);
        if (--left_ == 0) {
          response_.set_finish_reason(strata::v1::FINISH_REASON_LENGTH);
          response_.mutable_usage()->set_prompt_tokens(prompt_tokens_);
        }
        StartWrite(&response_);
      }
      int left_;
      int prompt_tokens_;
      strata::v1::GenerateResponse response_;
    };
    return new Stream(tokens_, request->token_ids().ids_size());
  }

 private:
  const int tokens_;
};

int RunFakeReplica(const std::string& listen, int tokens) {
  // As strata-worker does, so a fake replica costs what a worker's gRPC side would.
  strata::TuneProcessForServing();
  FakeReplica service(tokens);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(-1);
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (server == nullptr) return 1;
  server->GetHealthCheckService()->SetServingStatus("strata.v1.Inference", true);
  std::printf("fake-replica: serving on 127.0.0.1:%d\n", port);
  std::fflush(stdout);
  server->Wait();
  return 0;
}

// ---- child processes ---------------------------------------------------------

struct Child {
  pid_t pid = -1;
  std::string address;
  // SIGTERM first, so that nginx's master stops its workers (they are its
  // children, not the bench's, and would outlive a SIGKILL of the master);
  // SIGKILL after 2 s.
  ~Child() {
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) return;
      usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
};

// Runs argv with stdout to `log`; waits for a line containing " on HOST:PORT".
std::unique_ptr<Child> Spawn(const std::vector<std::string>& argv, const std::string& log,
                             bool want_address) {
  std::filesystem::remove(log);  // never read a previous run's address
  auto child = std::make_unique<Child>();
  child->pid = fork();
  if (child->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
    FILE* out = std::fopen(log.c_str(), "w");
    dup2(fileno(out), 1);
    dup2(fileno(out), 2);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  if (!want_address) return child;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line)) {
      const size_t on = line.find(" on ");
      if (on == std::string::npos) continue;
      const size_t end = line.find(' ', on + 4);
      child->address =
          line.substr(on + 4, end == std::string::npos ? std::string::npos : end - on - 4);
      return child;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fprintf(stderr, "router-bench: %s did not start; see %s\n", argv[0].c_str(), log.c_str());
  std::exit(1);
}

// ---- CPU accounting ----------------------------------------------------------

// User plus system CPU seconds of `pid` and of its children that are still
// running (nginx's workers are its master's children), from /proc.
double ProcessTreeCpuSeconds(pid_t pid) {
  static const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  double seconds = 0.0;
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (std::getline(stat, line)) {
    // Fields after the command name (which may hold spaces) in parentheses;
    // utime and stime are fields 14 and 15 of the line.
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::string field;
    for (int index = 3; index <= 15 && fields >> field; ++index) {
      if (index >= 14) seconds += std::stod(field) / ticks_per_second;
    }
  }
  std::ifstream children(absl::StrCat("/proc/", pid, "/task/", pid, "/children"));
  pid_t child = 0;
  while (children >> child) seconds += ProcessTreeCpuSeconds(child);
  return seconds;
}

double CpuSeconds(const std::vector<pid_t>& pids) {
  double seconds = 0.0;
  for (pid_t pid : pids) seconds += ProcessTreeCpuSeconds(pid);
  return seconds;
}

// ---- load --------------------------------------------------------------------

struct Measurement {
  std::vector<double> ttft_ms;  // per request
  int64_t requests = 0;
  int64_t errors = 0;
  double seconds = 0.0;
  double Percentile(double p) const {
    if (ttft_ms.empty()) return 0.0;
    std::vector<double> sorted = ttft_ms;
    std::sort(sorted.begin(), sorted.end());
    return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))];
  }
  double rate() const { return seconds > 0 ? requests / seconds : 0.0; }
};

// Keeps `concurrency` Generate streams in flight for `duration` (or for
// `max_requests` requests), over `channels` connections, with callback reactors.
Measurement RunLoad(const std::string& address, const strata::v1::GenerateRequest& request,
                    int concurrency, std::chrono::milliseconds duration, int64_t max_requests,
                    int channels) {
  std::vector<std::unique_ptr<strata::v1::Inference::Stub>> stubs;
  for (int i = 0; i < channels; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetInt("strata.bench.channel", i);
    arguments.SetMaxSendMessageSize(-1);
    stubs.push_back(strata::v1::Inference::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments)));
  }
  Measurement result;
  std::mutex mu;
  std::condition_variable done;
  int active = concurrency;
  std::atomic<int64_t> issued{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + duration;

  class Slot final : public grpc::ClientReadReactor<strata::v1::GenerateResponse> {
   public:
    using Finished = std::function<void(Slot*)>;
    Slot(strata::v1::Inference::Stub& stub, const strata::v1::GenerateRequest& request,
         std::function<bool()> more, std::function<void(double, bool)> record, Finished finished)
        : stub_(stub),
          request_(request),
          more_(std::move(more)),
          record_(std::move(record)),
          finished_(std::move(finished)) {}
    void Issue() {
      context_ = std::make_unique<grpc::ClientContext>();
      first_ = true;
      started_ = Clock::now();
      stub_.async()->Generate(context_.get(), &request_, this);
      StartRead(&response_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;
      if (first_) {
        first_ = false;
        ttft_ = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
      }
      StartRead(&response_);
    }
    void OnDone(const grpc::Status& status) override {
      record_(ttft_, status.ok());
      if (more_()) {
        Issue();
      } else {
        finished_(this);
      }
    }

   private:
    strata::v1::Inference::Stub& stub_;
    const strata::v1::GenerateRequest& request_;
    std::function<bool()> more_;
    std::function<void(double, bool)> record_;
    Finished finished_;
    std::unique_ptr<grpc::ClientContext> context_;
    strata::v1::GenerateResponse response_;
    Clock::time_point started_;
    bool first_ = true;
    double ttft_ = 0.0;
  };

  std::vector<std::unique_ptr<Slot>> slots;
  const auto more = [&] {
    return Clock::now() < end && (max_requests <= 0 || issued.fetch_add(1) < max_requests);
  };
  const auto record = [&](double ttft, bool ok) {
    std::lock_guard<std::mutex> lock(mu);
    ++result.requests;
    if (!ok) ++result.errors;
    result.ttft_ms.push_back(ttft);
  };
  const auto finished = [&](Slot*) {
    std::lock_guard<std::mutex> lock(mu);
    if (--active == 0) done.notify_all();
  };
  for (int i = 0; i < concurrency; ++i) {
    slots.push_back(
        std::make_unique<Slot>(*stubs[i % stubs.size()], request, more, record, finished));
  }
  for (auto& slot : slots) {
    if (more()) {
      slot->Issue();
    } else {
      finished(slot.get());
    }
  }
  std::unique_lock<std::mutex> lock(mu);
  done.wait(lock, [&] { return active == 0; });
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

strata::v1::GenerateRequest Prompt(int token_ids) {
  strata::v1::GenerateRequest request;
  // Ids of 4 varint bytes, as a large vocabulary's would mostly be: 55k ids ~ 220 KB.
  for (int i = 0; i < token_ids; ++i) request.mutable_token_ids()->add_ids((1 << 21) + i % 100000);
  request.mutable_stopping()->set_max_tokens(8);
  return request;
}

// A port nothing listens on now (bound, then released).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

void WriteNginxConfig(const std::string& path, const std::string& dir, int port,
                      const std::vector<std::string>& replicas) {
  std::ofstream out(path);
  out << "worker_processes 1;\ndaemon off;\nerror_log " << dir << "/nginx-error.log warn;\n"
      << "pid " << dir << "/nginx.pid;\nevents { worker_connections 8192; }\n"
      << "http {\n  access_log off;\n  client_body_temp_path " << dir << ";\n"
      << "  proxy_temp_path " << dir << ";\n  fastcgi_temp_path " << dir << ";\n"
      << "  uwsgi_temp_path " << dir << ";\n  scgi_temp_path " << dir << ";\n"
      << "  client_max_body_size 0;\n  client_body_buffer_size 1m;\n"
      << "  http2_max_concurrent_streams 1024;\n  upstream replicas {\n";
  for (const std::string& replica : replicas) out << "    server " << replica << ";\n";
  out << "    keepalive 64;\n  }\n  server {\n    listen 127.0.0.1:" << port << " http2;\n"
      << "    location / { grpc_pass grpc://replicas; }\n  }\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"strata-router-bench: router overhead against fake replicas (and nginx)"};
  std::string fake_listen;
  int tokens = 8;
  int replicas = 2;
  int concurrency = 64;
  double seconds = 5.0;
  int latency_requests = 2000;
  int large_prompt_tokens = 55000;
  std::string router_binary;
  std::string nginx_binary;
  int nginx_port = 0;
  std::string work_dir = "/tmp/strata-router-bench";
  app.add_option("--fake-replica", fake_listen, "Serve as a fake replica on HOST:PORT and stay");
  app.add_option("--tokens", tokens, "Tokens each fake Generate streams")->capture_default_str();
  app.add_option("--replicas", replicas, "Fake replicas to start")->capture_default_str();
  app.add_option("--concurrency", concurrency, "Streams in flight for requests/s")
      ->capture_default_str();
  app.add_option("--seconds", seconds, "Duration of each requests/s run")->capture_default_str();
  app.add_option("--latency-requests", latency_requests, "Requests for TTFT at concurrency 1")
      ->capture_default_str();
  app.add_option("--large-prompt-tokens", large_prompt_tokens,
                 "Token ids in the large prompts (55000 ids ~ 220 KB)")
      ->capture_default_str();
  app.add_option("--router", router_binary,
                 "strata-router binary (required unless --fake-replica)");
  app.add_option("--nginx", nginx_binary, "nginx binary for the grpc_pass comparison");
  app.add_option("--nginx-port", nginx_port, "nginx's port (default: a free one)");
  app.add_option("--work-dir", work_dir, "Logs and nginx files")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!fake_listen.empty()) return RunFakeReplica(fake_listen, tokens);
  if (router_binary.empty()) {
    std::fprintf(stderr, "router-bench: --router is required\n");
    return 1;
  }
  std::filesystem::create_directories(work_dir);
  const std::string self = std::filesystem::canonical("/proc/self/exe").string();

  std::vector<std::unique_ptr<Child>> fakes;
  std::vector<std::string> addresses;
  for (int i = 0; i < replicas; ++i) {
    fakes.push_back(
        Spawn({self, "--fake-replica", "127.0.0.1:0", "--tokens", std::to_string(tokens)},
              absl::StrCat(work_dir, "/fake", i, ".log"), true));
    addresses.push_back(fakes.back()->address);
  }
  auto router = Spawn({router_binary, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                       "--backends", absl::StrJoin(addresses, ","), "--log-level", "warn"},
                      work_dir + "/router.log", true);
  std::unique_ptr<Child> nginx;
  if (!nginx_binary.empty()) {
    if (nginx_port == 0) nginx_port = FreePort();
    WriteNginxConfig(work_dir + "/nginx.conf", work_dir, nginx_port, addresses);
    nginx = Spawn({nginx_binary, "-p", work_dir, "-c", work_dir + "/nginx.conf"},
                  work_dir + "/nginx.log", false);
    nginx->address = absl::StrCat("127.0.0.1:", nginx_port);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // health, connections

  struct Target {
    std::string name;
    std::string address;
    std::vector<pid_t> proxy;  // none for direct
  };
  std::vector<pid_t> fake_pids;
  for (const auto& fake : fakes) fake_pids.push_back(fake->pid);
  std::vector<Target> targets = {{"direct", addresses[0], {}},
                                 {"router", router->address, {router->pid}}};
  if (nginx) targets.push_back({"nginx", nginx->address, {nginx->pid}});

  nlohmann::json summary;
  const strata::v1::GenerateRequest small = Prompt(16);
  const strata::v1::GenerateRequest large = Prompt(large_prompt_tokens);
  std::printf("router-bench: %d fake replicas x %d tokens; large prompt %zu bytes\n", replicas,
              tokens, large.ByteSizeLong());
  const auto duration = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  for (const Target& target : targets) {
    RunLoad(target.address, small, 4, std::chrono::milliseconds(300), 0, 1);  // warm up
    const Measurement latency =
        RunLoad(target.address, small, 1, std::chrono::hours(1), latency_requests, 1);
    // CPU milliseconds per request of the proxy and of the replicas during `run`.
    struct CpuPerRequest {
      double proxy_ms = 0.0;
      double replicas_ms = 0.0;
    };
    const auto measure_cpu = [&](const std::function<Measurement()>& run, CpuPerRequest& cpu) {
      const double proxy_before = CpuSeconds(target.proxy);
      const double replicas_before = CpuSeconds(fake_pids);
      Measurement measurement = run();
      const double requests = std::max<int64_t>(1, measurement.requests);
      cpu.proxy_ms = (CpuSeconds(target.proxy) - proxy_before) * 1000.0 / requests;
      cpu.replicas_ms = (CpuSeconds(fake_pids) - replicas_before) * 1000.0 / requests;
      return measurement;
    };
    CpuPerRequest small_cpu;
    CpuPerRequest large_cpu;
    const Measurement rate = measure_cpu(
        [&] { return RunLoad(target.address, small, concurrency, duration, 0, 4); }, small_cpu);
    const Measurement large_rate = measure_cpu(
        [&] { return RunLoad(target.address, large, concurrency, duration, 0, 4); }, large_cpu);
    std::printf(
        "%-7s TTFT p50 %.3f ms p99 %.3f ms | %.0f req/s (%lld errors) | %d-id prompts %.0f req/s "
        "(%lld errors)\n",
        target.name.c_str(), latency.Percentile(0.5), latency.Percentile(0.99), rate.rate(),
        static_cast<long long>(rate.errors), large_prompt_tokens, large_rate.rate(),
        static_cast<long long>(large_rate.errors));
    std::printf(
        "%-7s CPU per request: proxy %.3f ms, replicas %.3f ms | %d-id prompts: proxy %.3f ms, "
        "replicas %.3f ms\n",
        target.name.c_str(), small_cpu.proxy_ms, small_cpu.replicas_ms, large_prompt_tokens,
        large_cpu.proxy_ms, large_cpu.replicas_ms);
    summary[target.name] = {{"ttft_p50_ms", latency.Percentile(0.5)},
                            {"ttft_p99_ms", latency.Percentile(0.99)},
                            {"requests_per_second", rate.rate()},
                            {"errors", rate.errors + large_rate.errors},
                            {"large_prompt_requests_per_second", large_rate.rate()},
                            {"proxy_cpu_ms_per_request", small_cpu.proxy_ms},
                            {"replicas_cpu_ms_per_request", small_cpu.replicas_ms},
                            {"large_prompt_proxy_cpu_ms_per_request", large_cpu.proxy_ms},
                            {"large_prompt_replicas_cpu_ms_per_request", large_cpu.replicas_ms}};
  }
  for (const char* name : {"router", "nginx"}) {
    if (!summary.contains(name)) continue;
    const double p50 =
        summary[name]["ttft_p50_ms"].get<double>() - summary["direct"]["ttft_p50_ms"].get<double>();
    const double p99 =
        summary[name]["ttft_p99_ms"].get<double>() - summary["direct"]["ttft_p99_ms"].get<double>();
    std::printf("%-7s adds TTFT p50 %.3f ms, p99 %.3f ms\n", name, p50, p99);
    summary[name]["added_ttft_p50_ms"] = p50;
    summary[name]["added_ttft_p99_ms"] = p99;
  }
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}
