// End-to-end: what `gpushare status` and `gpushare top` show of real tenants on the fake driver.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <sstream>
#include <string>

#include "process.hpp"
#include "scratch.hpp"
#include "status_json.hpp"

namespace gpushare::testing {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class Observe : public ScratchTest {
 protected:
  Env env() const {
    return fake_driver_env(GPUSHARE_TEST_FAKE_DIR, {{"FAKE_CUDA_DEVICE_MEMORY", std::to_string(8ull << 30)},
                                                    {"FAKE_CUDA_ENGINE", path("engine")}});
  }
  // `gpushare run --tenant NAME --state S OPTIONS -- PROGRAM ARGS`
  std::vector<std::string> tenant(const std::string& name, std::vector<std::string> options,
                                  std::vector<std::string> program) const {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL, "run", "--tenant", name, "--state", state_};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("--");
    argv.insert(argv.end(), program.begin(), program.end());
    return argv;
  }
  ProcessResult tool(std::vector<std::string> args) const {
    args.insert(args.begin(), GPUSHARE_TEST_TOOL);
    args.insert(args.end(), {"--state", state_});
    return run(args, {});
  }
  std::unique_ptr<Process> holder(const std::string& name, std::uint64_t quota_mib, std::uint64_t hold_mib) const {
    const std::string ready = path(name + ".ready");
    auto process = std::make_unique<Process>(
        tenant(name, {"--memory", std::to_string(quota_mib) + "MiB"},
               {GPUSHARE_TEST_PROBE, "linked", "hold", std::to_string(hold_mib * kMiB), ready}),
        env());
    EXPECT_TRUE(appears_within(ready, std::chrono::seconds(20)));
    return process;
  }
};

TEST_F(Observe, StatusShowsEachGpuItsTenantsAndTheirProcesses) {
  auto train = holder("train", 64, 40);
  // A second tenant whose allocation past its quota is refused once.
  const ProcessResult serve = run(
      tenant("serve", {"--memory", "16MiB"}, {GPUSHARE_TEST_PROBE, "dlsym", "fill", std::to_string(4 * kMiB)}), env());
  ASSERT_EQ(serve.exit_code, 0) << serve.err;

  const ProcessResult json = tool({"status", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_TRUE(contains(json.out, R"("schema_version":1,)")) << json.out;
  EXPECT_TRUE(contains(json.out, R"("uuid":"GPU-46414b45-4750-552d-0000-000000000000","name":"Fake GPU 0",)"
                                 R"("memory_total_bytes":8589934592)"))
      << json.out;
  EXPECT_TRUE(contains(json.out, R"({"tenant":"train","live":true,"memory_used_bytes":41943040,)"
                                 R"("memory_limit_bytes":67108864,"memory_peak_bytes":41943040,"oom_refusals":0,)"))
      << json.out;
  EXPECT_TRUE(contains(json.out, R"("processes":[{"pid":)" + std::to_string(train->pid()) +
                                     R"(,"alive":true,"held_bytes":41943040,"slot":)"))
      << json.out;
  EXPECT_TRUE(contains(json.out, R"({"tenant":"serve","live":false,"memory_used_bytes":0,"memory_limit_bytes":16777216,)"
                                 R"("memory_peak_bytes":16777216,"oom_refusals":1,)"))
      << json.out;

  const ProcessResult text = tool({"status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(contains(text.out, "GPU 0  GPU-46414b45-4750-552d-0000-000000000000  Fake GPU 0  8 GiB")) << text.out;
  EXPECT_TRUE(contains(text.out, "serve: inactive (no live process)")) << text.out;
  EXPECT_TRUE(contains(text.out, "pid " + std::to_string(train->pid()))) << text.out;
  ::kill(train->pid(), SIGKILL);
}

TEST_F(Observe, AKilledTenantIsShownInactiveAndItsBytesReturned) {
  auto train = holder("train", 64, 40);
  ::kill(train->pid(), SIGKILL);
  train->wait();
  // `top` only reads: the dead process is still in its slot, shown as not live.
  const ProcessResult top = tool({"top", "-n", "1"});
  ASSERT_EQ(top.exit_code, 0) << top.err;
  bool marked = false;
  for (const auto& line : lines_of(top.out)) marked = marked || (line.rfind("train", 0) == 0 && contains(line, " idle"));
  EXPECT_TRUE(marked) << top.out;
  // `status` sweeps first: the bytes are back and the tenant has no live process.
  const ProcessResult json = tool({"status", "--json"});
  EXPECT_TRUE(contains(json.out, R"({"tenant":"train","live":false,"memory_used_bytes":0,)")) << json.out;
  EXPECT_TRUE(contains(json.out, R"({"name":"train","live":false,)")) << json.out;
}

TEST_F(Observe, TopShowsGpuTimeAsRatesWithinEightyColumns) {
  Process busy(tenant("busy-tenant", {"--share", "30"}, {GPUSHARE_TEST_WORKLOAD, "linked", "saturate", "4", "1000"}),
               env());
  // Until it holds the GPU: starting takes longer on a loaded machine.
  ASSERT_TRUE(status_shows(state_, "busy-tenant holding the GPU", [](const Json& status) {
    return live_on_a_gpu(status, "busy-tenant") && holds_slice(status, "busy-tenant");
  }));
  const ProcessResult top = tool({"top", "-n", "3", "-d", "0.3"});
  ASSERT_EQ(top.exit_code, 0) << top.err;
  const auto lines = lines_of(top.out);
  std::optional<double> last_rate;
  for (const auto& line : lines) {
    EXPECT_LE(line.size(), 80u) << line;
    if (line.rfind("busy-tenant", 0) != 0) continue;
    std::istringstream words(line.substr(11));
    std::string used, used_unit, limit, rate;
    words >> used >> used_unit >> limit >> rate;
    if (rate != "-") last_rate = std::stod(rate);
    EXPECT_TRUE(contains(line, "|")) << "the 30% share is marked on the bar: " << line;
  }
  ASSERT_TRUE(last_rate.has_value()) << top.out;
  // Alone and saturating, it holds the (simulated) GPU nearly all the time.
  EXPECT_GT(*last_rate, 80.0) << top.out;
  EXPECT_EQ(busy.wait().exit_code, 0);
}

// A state path is whatever bytes the user chose; JSON must be UTF-8. The report stays valid JSON,
// each invalid byte shown as U+FFFD, and still names the state and its tenants.
TEST_F(Observe, StatusJsonIsValidForAStatePathThatIsNotUtf8) {
  const fs::path folder = dir_ / "caf\xe9-\xff";
  fs::create_directories(folder);
  const std::string state = (folder / "state").string();
  const ProcessResult filled = run({GPUSHARE_TEST_TOOL, "run", "--tenant", "latin1", "--memory", "16MiB", "--state",
                                    state, "--", GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(4 * kMiB)},
                                   env());
  ASSERT_EQ(filled.exit_code, 0) << filled.err;
  ASSERT_EQ(output_u64(filled.out, "allocated"), 16 * kMiB) << filled.out;

  std::string why;
  const auto status = read_status(state, &why);
  ASSERT_TRUE(status.has_value()) << why;
  const std::string shown = (dir_ / "caf\xef\xbf\xbd-\xef\xbf\xbd" / "state").string();
  EXPECT_EQ(status->at("state"), shown);
  ASSERT_EQ(status->at("tenants").size(), 1u) << status->dump();
  EXPECT_EQ(status->at("tenants")[0].at("name"), "latin1");
  const Json* use = tenant_on_gpu(*status, "latin1");
  ASSERT_NE(use, nullptr) << status->dump();
  EXPECT_EQ(use->at("memory_peak_bytes"), 16 * kMiB);
}

TEST_F(Observe, BadInputIsAClearError) {
  const ProcessResult missing = tool({"status"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(contains(missing.err, "no shared state at")) << missing.err;
  EXPECT_EQ(tool({"top", "-d", "0"}).exit_code, 2);
  EXPECT_EQ(tool({"top", "-n", "-3"}).exit_code, 2);
}

}  // namespace
}  // namespace gpushare::testing
