#include "worker/tokenizer/tokenizer.h"

#include <filesystem>

#include "worker/tokenizer/hugging_face_tokenizer.h"

namespace strata::tokenizer {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::error_code error;
  std::string file = path;
  if (std::filesystem::is_directory(path, error)) {
    file = (std::filesystem::path(path) / "tokenizer.json").string();
  }
  absl::StatusOr<std::unique_ptr<HuggingFaceTokenizer>> tokenizer =
      HuggingFaceTokenizer::Load(file);
  if (!tokenizer.ok()) return tokenizer.status();
  return std::unique_ptr<Tokenizer>(std::move(*tokenizer));
}

}  // namespace strata::tokenizer
