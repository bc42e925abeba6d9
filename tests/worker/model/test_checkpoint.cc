#include "tests/worker/model/test_checkpoint.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/model/llama_weights.h"

namespace strata::model::testing {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "strata-test-XXXXXX").string();
  char* made = ::mkdtemp(pattern.data());
  EXPECT_NE(made, nullptr) << "mkdtemp failed";
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestTensor MakeTensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                      const std::vector<float>& values) {
  TestTensor tensor{name, std::string(DTypeName(dtype)), shape, {}};
  tensor.bytes.resize(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&tensor.bytes[i * 4], &values[i], 4);
    } else {
      const uint16_t half = dtype == DType::kBF16 ? F32ToBf16(values[i]) : F32ToF16(values[i]);
      std::memcpy(&tensor.bytes[i * 2], &half, 2);
    }
  }
  return tensor;
}

std::string SafetensorsHeader(const std::vector<TestTensor>& tensors) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const TestTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  return header.dump();
}

std::string SafetensorsBytes(const std::vector<TestTensor>& tensors) {
  std::string header = SafetensorsHeader(tensors);
  while (header.size() % 8 != 0) header.push_back(' ');
  std::string out(8, '\0');
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  out += header;
  for (const TestTensor& t : tensors) out.append(t.bytes.begin(), t.bytes.end());
  return out;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void CopyDir(const std::string& source_dir, const std::string& dest_dir) {
  for (const auto& entry : std::filesystem::directory_iterator(source_dir)) {
    std::filesystem::copy_file(entry.path(),
                               std::filesystem::path(dest_dir) / entry.path().filename(),
                               std::filesystem::copy_options::overwrite_existing);
  }
}

void WriteRandomCheckpoint(const std::string& dir, const std::string& config_json, DType dtype,
                           uint64_t seed) {
  WriteFile(dir + "/config.json", config_json);
  auto config = ModelConfig::FromJson(config_json, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<TestTensor> tensors;
  for (const TensorSpec& spec : LlamaTensorSpecs(*config)) {
    int64_t count = 1;
    for (int64_t d : spec.shape) count *= d;
    std::vector<float> values(count);
    const bool norm = spec.name.find("norm") != std::string::npos;
    for (float& v : values) v = (norm ? 1.0f : 0.0f) + normal(rng) * (norm ? 2.0f : 1.0f);
    // Real checkpoints store norms and biases in the checkpoint's dtype too.
    tensors.push_back(MakeTensor(spec.name, dtype, spec.shape, values));
  }
  WriteFile(dir + "/model.safetensors", SafetensorsBytes(tensors));
}

}  // namespace strata::model::testing
