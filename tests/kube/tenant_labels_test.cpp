#include "tenant_labels.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace gpushare::kube {
namespace {

class TenantLabelsFile : public testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/gpushare-labels-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/tenant-labels.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write_text(const std::string& text) { std::ofstream(path_, std::ios::binary) << text; }

  std::string dir_;
  std::string path_;
};

TEST_F(TenantLabelsFile, RoundTrip) {
  const TenantLabelMap labels{{"ml/train-0", {"ml", "train-0", "main"}}, {"ml/llama", {"ml", "", ""}}};
  ASSERT_TRUE(write_tenant_labels(path_, labels));
  auto read = read_tenant_labels(path_);
  ASSERT_TRUE(read) << read.error().message;
  EXPECT_EQ(*read, labels);
  struct stat info {};
  ASSERT_EQ(::stat(path_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0644u);
  // Nothing left beside it.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), std::filesystem::directory_iterator{}), 1);
}

TEST_F(TenantLabelsFile, MissingFileIsNoLabels) {
  auto read = read_tenant_labels(path_);
  ASSERT_TRUE(read);
  EXPECT_TRUE(read->empty());
}

TEST_F(TenantLabelsFile, ReplacesTheFileWhole) {
  ASSERT_TRUE(write_tenant_labels(path_, {{"a/b", {"a", "b", ""}}}));
  ASSERT_TRUE(write_tenant_labels(path_, {{"c/d", {"c", "d", ""}}}));
  auto read = read_tenant_labels(path_);
  ASSERT_TRUE(read);
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ(read->begin()->first, "c/d");
}

TEST_F(TenantLabelsFile, DamagedFilesAreRefusedWithAMessage) {
  for (const char* text : {"", "not json", "[]", "{\"version\": 2, \"tenants\": {}}", "{\"version\": 1}",
                           "{\"version\": 1, \"tenants\": []}", "{\"version\": 1, \"tenants\": {\"a b\": {}}}",
                           "{\"version\": 1, \"tenants\": {\"a/b\": {\"pod\": 3}}}",
                           "{\"version\": 1, \"tenants\": {\"a/b\": \"x\"}}"}) {
    write_text(text);
    auto read = read_tenant_labels(path_);
    EXPECT_FALSE(read) << "accepted: " << text;
    if (!read) {
      EXPECT_NE(read.error().message.find(path_), std::string::npos) << read.error().message;
    }
  }
}

TEST_F(TenantLabelsFile, TooLargeIsRefused) {
  write_text(std::string(kTenantLabelsMaxBytes + 1, ' '));
  auto read = read_tenant_labels(path_);
  ASSERT_FALSE(read);
  EXPECT_NE(read.error().message.find("larger than"), std::string::npos);
}

TEST_F(TenantLabelsFile, ADirectoryOrFifoIsNotReadAsTheFile) {
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  auto read = read_tenant_labels(path_);  // must not block on the FIFO
  ASSERT_FALSE(read);
  EXPECT_NE(read.error().message.find("not a regular file"), std::string::npos);
}

TEST_F(TenantLabelsFile, UnknownFieldsAreIgnored) {
  write_text(R"({"version": 1, "tenants": {"a/b": {"pod": "b", "node": "n1"}}, "written_by": "agent"})");
  auto read = read_tenant_labels(path_);
  ASSERT_TRUE(read) << read.error().message;
  EXPECT_EQ(read->at("a/b").pod, "b");
}

TEST_F(TenantLabelsFile, WriteIntoAMissingDirectoryFails) {
  auto written = write_tenant_labels(dir_ + "/no/such/dir/labels.json", {});
  ASSERT_FALSE(written);
  EXPECT_NE(written.error().message.find("cannot create"), std::string::npos);
}

}  // namespace
}  // namespace gpushare::kube
