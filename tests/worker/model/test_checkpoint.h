// Test helpers that write model folders: temporary directories, safetensors
// files (also deliberately broken ones) and config.json files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "worker/model/model_config.h"

namespace strata::model::testing {

// A fresh directory under the system temp dir, removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct TestTensor {
  std::string name;
  std::string dtype;  // safetensors spelling; may be unsupported on purpose ("I8")
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// F32 values stored as `dtype` (F32, F16 or BF16).
TestTensor MakeTensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                      const std::vector<float>& values);

// Header JSON as a safetensors writer produces it (tensors packed in order).
std::string SafetensorsHeader(const std::vector<TestTensor>& tensors);
// The whole file: 8-byte length, header, data.
std::string SafetensorsBytes(const std::vector<TestTensor>& tensors);
void WriteFile(const std::string& path, const std::string& bytes);
std::string ReadFile(const std::string& path);

// Writes every file of `source_dir` into `dest_dir`.
void CopyDir(const std::string& source_dir, const std::string& dest_dir);

// A small random-weights checkpoint for `config_json` written to `dir`:
// config.json plus model.safetensors with every tensor LlamaTensorSpecs lists
// (weights normal-ish with std 0.05 drawn from `seed`, norms around 1), stored
// as `dtype`.
void WriteRandomCheckpoint(const std::string& dir, const std::string& config_json, DType dtype,
                           uint64_t seed);

}  // namespace strata::model::testing
