#include "tests/worker/tokenizer/test_tokenizers.h"

#include <fstream>
#include <map>
#include <memory>
#include <mutex>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace strata::tokenizer::testing {

const std::vector<std::string>& AllTokenizerNames() {
  static const std::vector<std::string> names = {"gpt2",
                                                 "phi-2",
                                                 "falcon-7b",
                                                 "stories260k",
                                                 "llama3-style",
                                                 "qwen2-style",
                                                 "digits-bytelevel",
                                                 "metaspace-first",
                                                 "split-behaviors",
                                                 "whitespace-nfc"};
  return names;
}

std::string TokenizerPath(const std::string& name) {
  const std::string data = std::string(STRATA_SOURCE_DIR) + "/tests/data/tokenizers/";
  if (name == "stories260k") return STRATA_MODEL_DIR;
  if (name == "gpt2" || name == "phi-2" || name == "falcon-7b") return data + name;
  return data + "synthetic/" + name + "/tokenizer.json";
}

const Tokenizer* GetTokenizer(const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = loaded.find(name);
  if (it == loaded.end()) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(TokenizerPath(name));
    EXPECT_TRUE(tokenizer.ok()) << name << ": " << tokenizer.status();
    if (!tokenizer.ok()) return nullptr;
    it = loaded.emplace(name, std::move(*tokenizer)).first;
  }
  return it->second.get();
}

std::vector<nlohmann::json> ReadFixture(const std::string& name, const std::string& kind) {
  const std::string path =
      std::string(STRATA_SOURCE_DIR) + "/tests/data/tokenizers/" + name + "." + kind + ".jsonl";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  EXPECT_FALSE(lines.empty()) << path;
  return lines;
}

std::vector<int32_t> Ids(const nlohmann::json& array) { return array.get<std::vector<int32_t>>(); }

std::string Escaped(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace strata::tokenizer::testing
