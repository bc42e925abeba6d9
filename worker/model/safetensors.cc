#include "worker/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace strata::model {
namespace {

using Json = nlohmann::json;

// safetensors' own limit on the header size.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status FileError(const std::string& path, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

absl::Status TensorError(const std::string& path, const std::string& tensor,
                         const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", tensor, "' ", problem));
}

// Error text from a status that names its own file: keep it one line.
std::string OneLine(const absl::Status& status) {
  std::string text(status.message());
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

}  // namespace

int64_t TensorView::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto mapped = MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(std::move(mapped).value()));
  STRATA_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

absl::Status SafetensorsFile::ParseHeader() {
  const std::string& file = path();
  const size_t file_size = mapped_->size();
  const std::byte* base = mapped_->bytes().data();
  if (file_size < 8) {
    return FileError(file, absl::StrCat("is ", file_size,
                                        " bytes, too short for a safetensors header (truncated?)"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(base[i]);
  if (header_len > file_size - 8) {
    return FileError(file,
                     absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                  file_size, " bytes; truncated?)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return FileError(file, absl::StrCat("header length ", header_len, " exceeds the ",
                                        kMaxHeaderBytes, "-byte limit"));
  }
  const char* header_text = reinterpret_cast<const char*>(base + 8);
  Json header = Json::parse(header_text, header_text + header_len, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return FileError(file, "header is not a JSON object (corrupt or not a safetensors file)");
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;

  struct Range {
    uint64_t begin;
    uint64_t end;
    size_t tensor;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const Json& entry = it.value();
    if (!entry.is_object())
      return TensorError(file, name, "has a header entry that is not an object");
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return TensorError(file, name, "has no dtype");
    }
    const std::string dtype_name = dtype_it->get<std::string>();
    TensorView view;
    view.name = name;
    if (dtype_name == "F32") {
      view.dtype = DType::kF32;
    } else if (dtype_name == "F16") {
      view.dtype = DType::kF16;
    } else if (dtype_name == "BF16") {
      view.dtype = DType::kBF16;
    } else {
      return TensorError(
          file, name,
          absl::StrCat("has unsupported dtype '", dtype_name, "' (supported: F32, F16, BF16)"));
    }
    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return TensorError(file, name, "has no shape");
    }
    // Guard the element count against overflow: no real tensor has 2^48 elements.
    uint64_t elements = 1;
    for (const Json& dim : *shape_it) {
      if (!dim.is_number_integer() || dim.get<int64_t>() < 0 ||
          dim.get<int64_t>() > (int64_t{1} << 40)) {
        return TensorError(file, name, absl::StrCat("has an invalid shape ", shape_it->dump()));
      }
      view.shape.push_back(dim.get<int64_t>());
      elements *= static_cast<uint64_t>(dim.get<int64_t>());
      if (elements > (uint64_t{1} << 48)) {
        return TensorError(file, name, absl::StrCat("has an invalid shape ", shape_it->dump()));
      }
    }
    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return TensorError(file, name, "has no valid data_offsets [begin, end]");
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end) {
      return TensorError(
          file, name,
          absl::StrCat("has data_offsets [", begin, ", ", end, "] that end before they begin"));
    }
    if (end > data_size) {
      return TensorError(file, name,
                         absl::StrCat("has data_offsets [", begin, ", ", end,
                                      "] that run past the end of the file (data section is ",
                                      data_size, " bytes; truncated?)"));
    }
    const uint64_t expected_bytes = elements * DTypeSize(view.dtype);
    if (end - begin != expected_bytes) {
      return TensorError(
          file, name,
          absl::StrCat("has data_offsets [", begin, ", ", end, "] holding ", end - begin,
                       " bytes, but shape ", ShapeString(view.shape), " of ",
                       std::string(DTypeName(view.dtype)), " needs ", expected_bytes));
    }
    if (begin % DTypeSize(view.dtype) != 0) {
      return TensorError(file, name,
                         absl::StrCat("has data_offsets [", begin, ", ", end, "] misaligned for ",
                                      std::string(DTypeName(view.dtype))));
    }
    view.data = base + data_start + begin;
    view.size_bytes = end - begin;
    ranges.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(view));
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      return FileError(
          file, absl::StrCat("tensors '", tensors_[ranges[i - 1].tensor].name, "' and '",
                             tensors_[ranges[i].tensor].name, "' overlap in the data section"));
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    tensors_[i].file = &mapped_->path();
    index_.emplace(tensors_[i].name, i);
  }
  return absl::OkStatus();
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  auto checkpoint = std::make_unique<Checkpoint>();
  const std::string single = absl::StrCat(dir, "/model.safetensors");
  const std::string index_path = absl::StrCat(dir, "/model.safetensors.index.json");
  std::error_code ec;
  if (std::filesystem::exists(single, ec)) {
    STRATA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
    for (const TensorView& t : file->tensors()) checkpoint->tensors_.emplace(t.name, &t);
    checkpoint->files_.push_back(std::move(file));
    checkpoint->description_ = single;
    return checkpoint;
  }
  if (!std::filesystem::exists(index_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  std::ifstream in(index_path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  Json index = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
      !index.at("weight_map").is_object()) {
    return FileError(index_path, "not a JSON object with a weight_map");
  }
  checkpoint->description_ = index_path;
  absl::flat_hash_map<std::string, SafetensorsFile*> shards;
  for (auto it = index.at("weight_map").begin(); it != index.at("weight_map").end(); ++it) {
    if (!it.value().is_string()) {
      return FileError(index_path,
                       absl::StrCat("weight_map entry '", it.key(), "' is not a file name"));
    }
    const std::string shard_name = it.value().get<std::string>();
    if (shard_name.find('/') != std::string::npos || shard_name == "..") {
      return FileError(index_path, absl::StrCat("weight_map names '", shard_name,
                                                "', which is not a file in the folder"));
    }
    auto shard_it = shards.find(shard_name);
    if (shard_it == shards.end()) {
      auto file = SafetensorsFile::Open(absl::StrCat(dir, "/", shard_name));
      if (!file.ok()) {
        return absl::Status(file.status().code(),
                            absl::StrCat(OneLine(file.status()), " (listed in ", index_path, ")"));
      }
      shard_it = shards.emplace(shard_name, file->get()).first;
      checkpoint->files_.push_back(std::move(file).value());
    }
    const TensorView* tensor = shard_it->second->Find(it.key());
    if (tensor == nullptr) {
      return TensorError(shard_it->second->path(), it.key(),
                         absl::StrCat("is missing (listed in ", index_path, ")"));
    }
    checkpoint->tensors_.emplace(it.key(), tensor);
  }
  return checkpoint;
}

const TensorView* Checkpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

}  // namespace strata::model
