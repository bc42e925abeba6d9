// Reader for Hugging Face safetensors checkpoints, memory-mapped: a file is
// an 8-byte little-endian header length, a JSON header mapping tensor names
// to {dtype, shape, data_offsets}, then the data section. Tensors are views
// into the mapping (zero copy). Sharded checkpoints are a folder with
// model.safetensors.index.json, whose weight_map names each tensor's file.
//
// Every header is validated when opened: dtype (F32, F16, BF16 only), shape,
// data_offsets inside the file, sized as the shape says, aligned to the
// element size and not overlapping. Errors are one line naming the file and
// the tensor.
//
// Thread-safety: immutable after Open(); safe to read from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/mapped_file.h"

namespace strata::model {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // inside the file's mapping
  size_t size_bytes = 0;
  const std::string* file = nullptr;  // path of the file that holds it, for messages

  int64_t elements() const;
};

// "[4096, 11008]"
std::string ShapeString(const std::vector<int64_t>& shape);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return mapped_->path(); }
  size_t size_bytes() const { return mapped_->size(); }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;

 private:
  explicit SafetensorsFile(std::unique_ptr<MappedFile> mapped) : mapped_(std::move(mapped)) {}
  absl::Status ParseHeader();

  std::unique_ptr<MappedFile> mapped_;
  std::vector<TensorView> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// All tensors of a model folder: model.safetensors, or the shards listed by
// model.safetensors.index.json.
class Checkpoint {
 public:
  // NOT_FOUND when the folder has neither file; other errors name the file.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  // Where a missing tensor was looked for: the file, or the index.
  const std::string& description() const { return description_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, const TensorView*> tensors_;
  std::string description_;
};

}  // namespace strata::model
