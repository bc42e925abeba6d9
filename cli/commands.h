// Subcommands of the `strata` CLI. Each Add*Command registers one subcommand
// on `app`; when it runs, it stores the process exit code in *exit_code.
// Errors print one line, "strata: CODE: message", on stderr.
//
// Thread-safety: single-threaded, from main.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.pb.h"

namespace strata::cli {

void AddGenerateCommand(CLI::App& app, int* exit_code);
void AddTokenizeCommand(CLI::App& app, int* exit_code);
void AddDetokenizeCommand(CLI::App& app, int* exit_code);
void AddInfoCommand(CLI::App& app, int* exit_code);
void AddHealthCommand(CLI::App& app, int* exit_code);
void AddClusterCommand(CLI::App& app, int* exit_code);
void AddDrainCommand(CLI::App& app, int* exit_code);
void AddBackendsCommand(CLI::App& app, int* exit_code);

// Prints "strata: CODE: message" on stderr; returns the exit code (1).
int PrintError(const absl::Status& status);
// "length", "stop", "eos", "cancelled"; "" when unset.
std::string FinishReasonName(v1::FinishReason reason);
// One line of JSON (invalid UTF-8 replaced, never thrown on).
std::string JsonLine(const nlohmann::json& value);

}  // namespace strata::cli
