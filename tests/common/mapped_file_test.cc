#include "common/mapped_file.h"

#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"

namespace strata {
namespace {

TEST(MappedFileTest, MapsFileContents) {
  const std::string path = ::testing::TempDir() + "/mapped_file_test.bin";
  { std::ofstream(path, std::ios::binary) << "hello"; }
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->size(), 5u);
  EXPECT_EQ(static_cast<char>((*file)->bytes()[4]), 'o');
  std::remove(path.c_str());
}

TEST(MappedFileTest, MissingFileIsNotFoundAndNamesThePath) {
  auto file = MappedFile::Open("/nonexistent/weights.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(file.status().message().find("/nonexistent/weights.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace strata
