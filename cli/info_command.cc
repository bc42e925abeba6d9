// strata info: what a server runs.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/inference_client.h"

namespace strata::cli {
namespace {

struct InfoFlags {
  std::string server;
  bool json = false;
};

int RunInfo(const InfoFlags& flags) {
  InferenceClient client(flags.server);
  absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo();
  if (!info.ok()) return PrintError(info.status());
  const std::vector<int32_t> eos(info->eos_token_ids().begin(), info->eos_token_ids().end());
  nlohmann::json json{{"model_name", info->model_name()},
                      {"architecture", info->architecture()},
                      {"max_context_length", info->max_context_length()},
                      {"vocab_size", info->vocab_size()},
                      {"eos_token_ids", eos},
                      {"dtype", info->dtype()},
                      {"parameter_count", info->parameter_count()},
                      {"tensor_parallel_size", info->tensor_parallel_size()},
                      {"pipeline_parallel_size", info->pipeline_parallel_size()},
                      {"build_version", info->build_version()}};
  if (info->has_bos_token_id()) json["bos_token_id"] = info->bos_token_id();
  if (flags.json) {
    std::printf("%s\n", JsonLine(json).c_str());
    return 0;
  }
  std::printf("model:          %s\n", info->model_name().c_str());
  std::printf("architecture:   %s\n", info->architecture().c_str());
  std::printf("parameters:     %lld\n", static_cast<long long>(info->parameter_count()));
  std::printf("dtype:          %s\n", info->dtype().c_str());
  std::printf("context:        %d tokens\n", info->max_context_length());
  std::printf("vocabulary:     %d\n", info->vocab_size());
  std::printf("bos / eos ids:  %s / %s\n",
              info->has_bos_token_id() ? std::to_string(info->bos_token_id()).c_str() : "-",
              absl::StrJoin(eos, ",").c_str());
  std::printf("parallelism:    tp %d, pp %d\n", info->tensor_parallel_size(),
              info->pipeline_parallel_size());
  std::printf("server build:   %s\n", info->build_version().c_str());
  return 0;
}

}  // namespace

void AddInfoCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<InfoFlags>();
  CLI::App* command = app.add_subcommand("info", "What a server runs: model, context, vocabulary");
  command->add_option("--server", flags->server, "Server address HOST:PORT")->required();
  command->add_flag("--json", flags->json, "Print one JSON object");
  command->callback([flags, exit_code] { *exit_code = RunInfo(*flags); });
}

}  // namespace strata::cli
