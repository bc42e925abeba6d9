// strata: the command line for people and scripts.
//   strata generate --server HOST:PORT [options] "text" | --prompt-ids 1,2,3
//   strata tokenize (--server HOST:PORT | --tokenizer FILE_OR_DIR) ["text"] [--json | --jsonl]
//   strata detokenize --server HOST:PORT 1,2,3
//   strata info --server HOST:PORT [--json]
//   strata health --server HOST:PORT [--service NAME] [--wait SECONDS]
//   strata cluster up --model DIR [--replicas R] [--tp T] [--pp P] [--detach --state-dir DIR]
//   strata cluster status --state-dir DIR [--json]
//   strata cluster down --state-dir DIR
//   strata drain --router-admin HOST:PORT --backend HOST:PORT [--reason TEXT]
//   strata drain --worker HOST:PORT [--reason TEXT]
//   strata backends --router-admin HOST:PORT [--json]
#include <cstdio>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "nlohmann/json.hpp"

namespace strata::cli {

int PrintError(const absl::Status& status) {
  std::fflush(stdout);
  std::fprintf(stderr, "strata: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "";
  }
}

std::string JsonLine(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace strata::cli

int main(int argc, char** argv) {
  CLI::App app{"strata: generate text, tokenize, inspect Strata servers, run a local cluster."};
  app.require_subcommand(1);
  int exit_code = 0;
  strata::cli::AddGenerateCommand(app, &exit_code);
  strata::cli::AddTokenizeCommand(app, &exit_code);
  strata::cli::AddDetokenizeCommand(app, &exit_code);
  strata::cli::AddInfoCommand(app, &exit_code);
  strata::cli::AddHealthCommand(app, &exit_code);
  strata::cli::AddClusterCommand(app, &exit_code);
  strata::cli::AddDrainCommand(app, &exit_code);
  strata::cli::AddBackendsCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    std::fprintf(stderr, "strata: %s\n", error.what());
    return error.get_exit_code() != 0 ? error.get_exit_code() : 2;
  }
  return exit_code;
}
