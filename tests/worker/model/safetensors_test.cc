#include "worker/model/safetensors.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_checkpoint.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;
using testing::MakeTensor;
using testing::SafetensorsBytes;
using testing::TempDir;
using testing::WriteFile;

std::string OpenError(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_FALSE(file.ok()) << path << " opened";
  if (file.ok()) return "";
  const std::string message(file.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_THAT(message, HasSubstr(path));
  return message;
}

// A header written by hand, with data of `data_bytes` zero bytes after it.
std::string RawFile(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

TEST(SafetensorsTest, ReadsTensorsInPlace) {
  TempDir dir;
  const std::vector<float> values = {1.0f, -2.0f, 3.5f, 0.25f, 8.0f, -0.5f};
  WriteFile(dir.File("t.safetensors"),
            SafetensorsBytes({MakeTensor("a", DType::kF32, {2, 3}, values),
                              MakeTensor("b", DType::kBF16, {6}, values),
                              MakeTensor("c", DType::kF16, {3, 2}, values)}));
  auto file = SafetensorsFile::Open(dir.File("t.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 3u);
  const TensorView* a = (*file)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->size_bytes, 24u);
  EXPECT_EQ(std::memcmp(a->data, values.data(), 24), 0);
  const TensorView* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  uint16_t b3;
  std::memcpy(&b3, b->data + 6, 2);
  EXPECT_EQ(Bf16ToF32(b3), 0.25f);
  const TensorView* c = (*file)->Find("c");
  ASSERT_NE(c, nullptr);
  uint16_t c1;
  std::memcpy(&c1, c->data + 2, 2);
  EXPECT_EQ(F16ToF32(c1), -2.0f);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST(SafetensorsTest, RefusesTruncatedFiles) {
  TempDir dir;
  const std::string bytes =
      SafetensorsBytes({MakeTensor("w", DType::kF32, {4, 4}, std::vector<float>(16, 1.0f))});
  WriteFile(dir.File("short.safetensors"), bytes.substr(0, bytes.size() - 4));
  EXPECT_THAT(OpenError(dir.File("short.safetensors")),
              HasSubstr("tensor 'w' has data_offsets [0, 64] that run past the end of the file"));
  WriteFile(dir.File("header.safetensors"), bytes.substr(0, 20));
  EXPECT_THAT(OpenError(dir.File("header.safetensors")),
              HasSubstr("runs past the end of the file (20 bytes; truncated?)"));
  WriteFile(dir.File("tiny.safetensors"), "abc");
  EXPECT_THAT(OpenError(dir.File("tiny.safetensors")), HasSubstr("is 3 bytes, too short"));
}

TEST(SafetensorsTest, RefusesOffsetsPastTheFile) {
  TempDir dir;
  WriteFile(dir.File("f.safetensors"),
            RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 8));
  EXPECT_THAT(OpenError(dir.File("f.safetensors")),
              HasSubstr("tensor 'w' has data_offsets [8, 16] that run past the end"));
}

TEST(SafetensorsTest, RefusesSizeMismatchOverlapAndMisalignment) {
  TempDir dir;
  WriteFile(dir.File("size.safetensors"),
            RawFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 16));
  EXPECT_THAT(OpenError(dir.File("size.safetensors")),
              HasSubstr("holding 8 bytes, but shape [3] of F32 needs 12"));
  WriteFile(dir.File("overlap.safetensors"),
            RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    16));
  EXPECT_THAT(OpenError(dir.File("overlap.safetensors")), HasSubstr("tensors 'a' and 'b' overlap"));
  WriteFile(dir.File("align.safetensors"),
            RawFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})", 8));
  EXPECT_THAT(OpenError(dir.File("align.safetensors")), HasSubstr("misaligned for F32"));
}

TEST(SafetensorsTest, RefusesUnsupportedDtypeAndBadHeaders) {
  TempDir dir;
  WriteFile(dir.File("i8.safetensors"),
            RawFile(R"({"q":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 4));
  EXPECT_THAT(OpenError(dir.File("i8.safetensors")),
              HasSubstr("tensor 'q' has unsupported dtype 'I8' (supported: F32, F16, BF16)"));
  WriteFile(dir.File("json.safetensors"), RawFile("{not json", 0));
  EXPECT_THAT(OpenError(dir.File("json.safetensors")), HasSubstr("header is not a JSON object"));
  WriteFile(dir.File("shape.safetensors"),
            RawFile(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4));
  EXPECT_THAT(OpenError(dir.File("shape.safetensors")), HasSubstr("invalid shape [-1]"));
  EXPECT_THAT(OpenError(dir.File("absent.safetensors")), HasSubstr("absent.safetensors"));
}

TEST(SafetensorsTest, ShardedIndexMustNameExistingFilesAndTensors) {
  TempDir dir;
  WriteFile(dir.File("model-00001-of-00001.safetensors"),
            SafetensorsBytes({MakeTensor("a", DType::kF32, {1}, {1.0f})}));
  WriteFile(dir.File("model.safetensors.index.json"),
            R"({"weight_map": {"a": "model-00001-of-00001.safetensors"}})");
  auto checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_NE((*checkpoint)->Find("a"), nullptr);

  WriteFile(dir.File("model.safetensors.index.json"),
            R"({"weight_map": {"a": "model-00001-of-00001.safetensors",
                               "b": "model-00001-of-00001.safetensors"}})");
  checkpoint = Checkpoint::Open(dir.path());
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(std::string(checkpoint.status().message()),
              HasSubstr("model-00001-of-00001.safetensors: tensor 'b' is missing (listed in"));

  WriteFile(dir.File("model.safetensors.index.json"),
            R"({"weight_map": {"a": "model-00002-of-00002.safetensors"}})");
  checkpoint = Checkpoint::Open(dir.path());
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(std::string(checkpoint.status().message()),
              HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_THAT(std::string(checkpoint.status().message()),
              HasSubstr("(listed in " + dir.File("model.safetensors.index.json") + ")"));
}

}  // namespace
}  // namespace strata::model
