// The exporter's reading of the agent's tenant-labels file: missing, valid, damaged, replaced.
#include "tenant_labels_file.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace gpushare::exporter {
namespace {

namespace fs = std::filesystem;

class TenantLabelsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / (std::string("labels-") + test->name() + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // As the agent writes it: a new file renamed over the old one.
  void replace_with(const std::string& text) const {
    const fs::path temporary = dir_ / "labels.json.new";
    std::ofstream(temporary) << text;
    fs::rename(temporary, path());
  }
  std::string path() const { return (dir_ / "labels.json").string(); }

  fs::path dir_;
};

TEST_F(TenantLabelsFileTest, AMissingFileGivesNoLabelsAndNoProblem) {
  TenantLabelsFile file(path());
  const auto reading = file.read();
  EXPECT_TRUE(reading->pods.empty());
  EXPECT_EQ(reading->problem, "");
  TenantLabelsFile in_missing_dir((dir_ / "no" / "labels.json").string());
  EXPECT_EQ(in_missing_dir.read()->problem, "");
}

TEST_F(TenantLabelsFileTest, ReadsTheTenantsPods) {
  replace_with(R"({"version":1,"tenants":{"ml/train":{"namespace":"ml","pod":"train-0","container":"main"},)"
               R"("ml/serve":{"namespace":"ml","pod":"serve-1"}}})");
  TenantLabelsFile file(path());
  const auto reading = file.read();
  EXPECT_EQ(reading->problem, "");
  ASSERT_EQ(reading->pods.size(), 2u);
  const PodLabels& train = reading->pods.at("ml/train");
  EXPECT_EQ(train.namespace_name, "ml");
  EXPECT_EQ(train.pod, "train-0");
  EXPECT_EQ(train.container, "main");
  EXPECT_EQ(reading->pods.at("ml/serve").container, "");
}

TEST_F(TenantLabelsFileTest, ADamagedFileGivesNoLabelsAndSaysWhy) {
  replace_with(R"({"version":1,"tenants":{"ml/train":)");
  TenantLabelsFile file(path());
  const auto reading = file.read();
  EXPECT_TRUE(reading->pods.empty());
  EXPECT_NE(reading->problem.find("tenant labels not used"), std::string::npos) << reading->problem;
  EXPECT_NE(reading->problem.find(path()), std::string::npos) << reading->problem;
}

TEST_F(TenantLabelsFileTest, TheSameFileIsReadOnceAndAReplacedOneAgain) {
  replace_with(R"({"version":1,"tenants":{"ml/train":{"namespace":"ml","pod":"train-0"}}})");
  TenantLabelsFile file(path());
  const auto first = file.read();
  EXPECT_EQ(file.read(), first) << "unchanged: the cached reading";
  replace_with(R"({"version":1,"tenants":{"ml/train":{"namespace":"ml","pod":"train-1"}}})");
  EXPECT_EQ(file.read()->pods.at("ml/train").pod, "train-1");
  replace_with("not json");
  EXPECT_FALSE(file.read()->problem.empty());
  replace_with(R"({"version":1,"tenants":{}})");
  EXPECT_EQ(file.read()->problem, "");
  fs::remove(path());
  const auto gone = file.read();
  EXPECT_TRUE(gone->pods.empty());
  EXPECT_EQ(gone->problem, "");
}

}  // namespace
}  // namespace gpushare::exporter
