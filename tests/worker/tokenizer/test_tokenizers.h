// Shared helpers for the tokenizer tests: the tokenizers under test (loaded
// once per process) and their Hugging Face fixtures.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/tokenizer/tokenizer.h"

namespace strata::tokenizer::testing {

// Fixture names: the real tokenizers, the bundled model's and the synthetic
// ones made by tests/data/tokenizers/generate_fixtures.mjs.
const std::vector<std::string>& AllTokenizerNames();

// tokenizer.json (or its folder) of `name`.
std::string TokenizerPath(const std::string& name);

// The tokenizer `name`, loaded once; fails the test (and returns null) when
// it does not load.
const Tokenizer* GetTokenizer(const std::string& name);

// The lines of tests/data/tokenizers/<name>.<kind>.jsonl.
std::vector<nlohmann::json> ReadFixture(const std::string& name, const std::string& kind);

std::vector<int32_t> Ids(const nlohmann::json& array);

// Printable form of `text` for failure messages (escapes, code points).
std::string Escaped(const std::string& text);

}  // namespace strata::tokenizer::testing
