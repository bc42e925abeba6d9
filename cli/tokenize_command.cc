// strata tokenize / strata detokenize: with a server's tokenizer, or offline
// with a tokenizer.json (no server).
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/inference_client.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::cli {
namespace {

struct TokenizeFlags {
  std::string server;
  std::string tokenizer_path;
  std::string text;
  bool no_special_tokens = false;
  bool json = false;
  bool jsonl = false;
};

// Tokenizes with a server or a local tokenizer, whichever the flags name.
class TokenizeBackend {
 public:
  static absl::StatusOr<std::unique_ptr<TokenizeBackend>> Create(const TokenizeFlags& flags) {
    auto backend = std::unique_ptr<TokenizeBackend>(new TokenizeBackend());
    if (!flags.tokenizer_path.empty()) {
      absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> loaded =
          tokenizer::Tokenizer::Load(flags.tokenizer_path);
      if (!loaded.ok()) return loaded.status();
      backend->tokenizer_ = *std::move(loaded);
    } else {
      backend->client_ = std::make_unique<InferenceClient>(flags.server);
    }
    return backend;
  }

  absl::StatusOr<v1::TokenizeResponse> Tokenize(const std::string& text,
                                                bool add_special_tokens) const {
    if (client_ != nullptr) {
      v1::TokenizeRequest request;
      request.set_text(text);
      request.set_add_special_tokens(add_special_tokens);
      return client_->Tokenize(request);
    }
    v1::TokenizeResponse response;
    for (int32_t id : tokenizer_->Encode(text, add_special_tokens)) {
      response.add_ids(id);
      response.add_tokens(tokenizer_->IdToToken(id));
    }
    return response;
  }

 private:
  TokenizeBackend() = default;
  std::unique_ptr<InferenceClient> client_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
};

std::vector<int32_t> Ids(const v1::TokenizeResponse& response) {
  return std::vector<int32_t>(response.ids().begin(), response.ids().end());
}

// stdin lines of {"text": ...} -> stdout lines of {"ids": [...]}.
int RunJsonl(const TokenizeBackend& backend, bool add_special_tokens) {
  std::string line;
  int64_t line_number = 0;
  while (std::getline(std::cin, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json input = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!input.is_object() || !input.contains("text") || !input["text"].is_string()) {
      return PrintError(absl::InvalidArgumentError(absl::StrCat(
          "stdin line ", line_number, ": expected a JSON object {\"text\": \"...\"}")));
    }
    absl::StatusOr<v1::TokenizeResponse> response =
        backend.Tokenize(input["text"].get<std::string>(), add_special_tokens);
    if (!response.ok()) return PrintError(response.status());
    std::printf("%s\n", JsonLine({{"ids", Ids(*response)}}).c_str());
  }
  std::fflush(stdout);
  return 0;
}

int RunTokenize(const TokenizeFlags& flags) {
  if (flags.server.empty() == flags.tokenizer_path.empty()) {
    return PrintError(absl::InvalidArgumentError("give exactly one of --server and --tokenizer"));
  }
  absl::StatusOr<std::unique_ptr<TokenizeBackend>> backend = TokenizeBackend::Create(flags);
  if (!backend.ok()) return PrintError(backend.status());
  const bool add_special_tokens = !flags.no_special_tokens;
  if (flags.jsonl) return RunJsonl(**backend, add_special_tokens);
  absl::StatusOr<v1::TokenizeResponse> response =
      (*backend)->Tokenize(flags.text, add_special_tokens);
  if (!response.ok()) return PrintError(response.status());
  if (flags.json) {
    std::printf("%s\n", JsonLine({{"ids", Ids(*response)},
                                  {"tokens", std::vector<std::string>(response->tokens().begin(),
                                                                      response->tokens().end())}})
                            .c_str());
  } else {
    std::printf("%s\n", absl::StrJoin(response->ids(), " ").c_str());
  }
  return 0;
}

struct DetokenizeFlags {
  std::string server;
  std::string ids;
  bool keep_special_tokens = false;
};

int RunDetokenize(const DetokenizeFlags& flags) {
  v1::DetokenizeRequest request;
  for (absl::string_view piece :
       absl::StrSplit(flags.ids, absl::ByAnyChar(", "), absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id)) {
      return PrintError(absl::InvalidArgumentError(
          absl::StrCat("ids: '", std::string(piece), "' is not an integer")));
    }
    request.add_ids(id);
  }
  request.set_skip_special_tokens(!flags.keep_special_tokens);
  InferenceClient client(flags.server);
  absl::StatusOr<v1::DetokenizeResponse> response = client.Detokenize(request);
  if (!response.ok()) return PrintError(response.status());
  std::printf("%s\n", response->text().c_str());
  return 0;
}

}  // namespace

void AddTokenizeCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* command = app.add_subcommand(
      "tokenize", "Text to token ids, with a server's tokenizer or a local tokenizer.json");
  command->add_option("--server", flags->server, "Server address HOST:PORT");
  command->add_option("--tokenizer", flags->tokenizer_path,
                      "tokenizer.json or its folder (offline, no server)");
  command->add_option("text", flags->text, "The text to tokenize");
  command->add_flag("--no-special-tokens", flags->no_special_tokens, "Do not add BOS");
  command->add_flag("--json", flags->json, "Print {\"ids\": [...], \"tokens\": [...]}");
  command->add_flag("--jsonl", flags->jsonl,
                    "Read {\"text\": ...} lines on stdin, print {\"ids\": [...]} lines");
  command->callback([flags, exit_code] { *exit_code = RunTokenize(*flags); });
}

void AddDetokenizeCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<DetokenizeFlags>();
  CLI::App* command = app.add_subcommand("detokenize", "Token ids to text, with a server");
  command->add_option("--server", flags->server, "Server address HOST:PORT")->required();
  command->add_option("ids", flags->ids, "Token ids: 1,2,3")->required();
  command->add_flag("--keep-special-tokens", flags->keep_special_tokens,
                    "Print special tokens such as <s>");
  command->callback([flags, exit_code] { *exit_code = RunDetokenize(*flags); });
}

}  // namespace strata::cli
