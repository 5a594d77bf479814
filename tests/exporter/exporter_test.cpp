// End-to-end: `gpushare exporter` (the dispatch and the real program) scraped over loopback with
// cpp-httplib's client, after a known workload has run on the fake driver under the preload
// library, with one real shared state file per test.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "exposition.hpp"
#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;
constexpr auto kPatience = std::chrono::seconds(10);

std::string gpu_uuid_of_the_only_gpu(const Exposition& metrics) {
  std::vector<std::string> uuids;
  for (const auto& sample : metrics.samples) {
    if (sample.name == "gpushare_gpu_info") uuids.push_back(sample.labels.at("gpu_uuid"));
  }
  return uuids.size() == 1 ? uuids.front() : std::string();
}

// A running exporter and the address it announced on its first line.
struct Exporter {
  std::unique_ptr<Process> process;
  std::string first_line;
  std::string host;
  int port = 0;
};

class ExporterTest : public ScratchTest {
 protected:
  // The fake driver as the real one, its simulated engine for kernels, and this test's state.
  Env driver_env() const {
    return fake_driver_env(GPUSHARE_TEST_FAKE_DIR, {{"GPUSHARE_STATE", state_},
                                                    {"FAKE_CUDA_DEVICE_MEMORY", std::to_string(8 * kGiB)},
                                                    {"FAKE_CUDA_ENGINE", path("engine")}});
  }
  // A program started with the preload library in its environment, as tenant `tenant`.
  Env tenant_env(const std::string& tenant, const std::string& memory_limit) const {
    Env env = driver_env();
    env["LD_PRELOAD"] = GPUSHARE_TEST_PRELOAD;
    env["GPUSHARE_TENANT"] = tenant;
    env["GPUSHARE_MEMORY_LIMIT"] = memory_limit;
    return env;
  }

  static bool wait_until(const std::function<bool()>& condition) {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (!condition()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  // `gpushare exporter ARGS`. Its stdout goes to a file, which the test can read while it runs.
  Exporter start_exporter(const std::vector<std::string>& args, const Env& env = {}) const {
    const std::string out = path("exporter.out");
    const std::string redirect_and_exec = R"(out=$1; shift; exec "$@" >"$out")";
    std::vector<std::string> argv{"/bin/sh", "-c", redirect_and_exec, "sh", out, GPUSHARE_TEST_TOOL, "exporter"};
    argv.insert(argv.end(), args.begin(), args.end());
    Exporter exporter;
    exporter.process = std::make_unique<Process>(argv, env);
    const bool announced = wait_until([&] {
      std::ifstream file(out);
      return std::getline(file, exporter.first_line) && !file.eof();  // a whole line, newline included
    });
    EXPECT_TRUE(announced) << "no address on the exporter's first line";
    std::smatch match;
    if (std::regex_match(exporter.first_line, match, std::regex(R"(listening on http://([0-9.]+):([0-9]+)/metrics)"))) {
      exporter.host = match[1];
      exporter.port = std::stoi(match[2]);
    }
    EXPECT_GT(exporter.port, 0) << exporter.first_line;
    return exporter;
  }

  // Kernels of 1 ms back to back for 0.3 s on the fake engine, as tenant "compute" of `gpushare run`.
  ProcessResult run_compute_workload() const {
    return run({GPUSHARE_TEST_TOOL, "run", "--tenant", "compute", "--state", state_, "--", GPUSHARE_TEST_WORKLOAD,
                "linked", "saturate", "0.3", "1000"},
               driver_env());
  }

  static Exposition scrape(const Exporter& exporter) {
    httplib::Client client(exporter.host, exporter.port);
    const auto response = client.Get("/metrics");
    if (!response) throw std::runtime_error("scrape failed: " + httplib::to_string(response.error()));
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    return parse_exposition(response->body);
  }

  static void stop(Exporter& exporter, int signal) {
    exporter.process->kill(signal);
    const ProcessResult result = exporter.process->wait();
    EXPECT_EQ(result.exit_code, 0) << "stopped cleanly by signal " << signal << "\n" << result.err;
  }
};

TEST_F(ExporterTest, ScrapesAKnownWorkloadOverLoopback) {
  // "hold": 40 MiB held under a 64 MiB quota for as long as the test runs.
  Process holder({GPUSHARE_TEST_PROBE, "linked", "hold", std::to_string(40 * kMiB), path("ready")},
                 tenant_env("hold", "64MiB"));
  ASSERT_TRUE(wait_until([&] { return fs::exists(path("ready")); }));
  // "refused": 8 MiB at a time under 20 MiB: two granted, the third refused, then all freed.
  const ProcessResult refused =
      run({GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(8 * kMiB)}, tenant_env("refused", "20MiB"));
  ASSERT_EQ(refused.exit_code, 0) << refused.err;
  ASSERT_EQ(output_u64(refused.out, "allocated"), 16 * kMiB);
  // "compute": kernels of 1 ms back to back for 0.3 s through `gpushare run`, with no memory quota.
  // It exits holding the time slice, which the next sweep ends (`gpushare status` sweeps; see
  // ATenantThatExitedHoldingTheSliceStopsAccruingGpuTime for why that matters).
  const auto started = std::chrono::steady_clock::now();
  const ProcessResult compute = run_compute_workload();
  ASSERT_EQ(compute.exit_code, 0) << compute.err;
  ASSERT_EQ(run({GPUSHARE_TEST_TOOL, "status", "--state", state_}, {}).exit_code, 0);
  const std::chrono::duration<double> compute_wall = std::chrono::steady_clock::now() - started;
  const auto launches = output_u64(compute.out, "launches");
  ASSERT_TRUE(launches.has_value()) << compute.out;

  Exporter exporter = start_exporter({"--listen", "127.0.0.1:0", "--state", state_});
  ASSERT_GT(exporter.port, 0);
  Exposition metrics = scrape(exporter);
  EXPECT_EQ(metrics.value("gpushare_up"), "1");
  EXPECT_EQ(metrics.value("gpushare_gpu_memory_total_bytes"), std::to_string(8 * kGiB));
  ASSERT_EQ(metrics.value("gpushare_gpu_info", {{"name", "Fake GPU 0"}}), "1");
  const std::string uuid = gpu_uuid_of_the_only_gpu(metrics);
  ASSERT_EQ(uuid.rfind("GPU-", 0), 0u) << uuid;
  const auto on_gpu = [&](const Exposition& exposition, const std::string& name, const std::string& tenant) {
    return exposition.value(name, {{"gpu_uuid", uuid}, {"tenant", tenant}});
  };

  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_used_bytes", "hold"), std::to_string(40 * kMiB));
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_limit_bytes", "hold"), std::to_string(64 * kMiB));
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_peak_bytes", "hold"), std::to_string(40 * kMiB));
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_oom_refusals_total", "hold"), "0");
  EXPECT_EQ(metrics.value("gpushare_tenant_live_processes", {{"tenant", "hold"}}), "1");

  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_used_bytes", "refused"), "0");
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_limit_bytes", "refused"), std::to_string(20 * kMiB));
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_peak_bytes", "refused"), std::to_string(16 * kMiB));
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_oom_refusals_total", "refused"), "1");
  EXPECT_EQ(metrics.value("gpushare_tenant_live_processes", {{"tenant", "refused"}}), "0");

  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_launches_total", "compute"), std::to_string(*launches));
  const auto gpu_seconds_text = on_gpu(metrics, "gpushare_tenant_gpu_seconds_total", "compute");
  ASSERT_TRUE(gpu_seconds_text.has_value()) << "no gpushare_tenant_gpu_seconds_total for compute";
  const double gpu_seconds = std::stod(*gpu_seconds_text);
  EXPECT_GT(gpu_seconds, 0);
  EXPECT_LE(gpu_seconds, compute_wall.count());
  const auto wait_seconds_text = on_gpu(metrics, "gpushare_tenant_wait_seconds_total", "compute");
  ASSERT_TRUE(wait_seconds_text.has_value()) << "no gpushare_tenant_wait_seconds_total for compute";
  EXPECT_GE(std::stod(*wait_seconds_text), 0);
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_limit_bytes", "compute"), std::nullopt) << "no quota, no sample";
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_holds_slice", "hold"), "0");

  // A killed tenant's bytes stay counted, shown as a dead process, until something sweeps: the
  // exporter only reads. `gpushare status` sweeps.
  holder.kill(SIGKILL);
  holder.wait();
  metrics = scrape(exporter);
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_used_bytes", "hold"), std::to_string(40 * kMiB));
  EXPECT_EQ(metrics.value("gpushare_tenant_dead_processes", {{"tenant", "hold"}}), "1");
  EXPECT_EQ(metrics.value("gpushare_tenant_live_processes", {{"tenant", "hold"}}), "0");
  ASSERT_EQ(run({GPUSHARE_TEST_TOOL, "status", "--state", state_}, {}).exit_code, 0);
  metrics = scrape(exporter);
  EXPECT_EQ(on_gpu(metrics, "gpushare_tenant_memory_used_bytes", "hold"), "0");
  EXPECT_EQ(metrics.value("gpushare_tenant_dead_processes", {{"tenant", "hold"}}), "0");

  // The index page links the metrics; other paths are not found.
  httplib::Client client(exporter.host, exporter.port);
  const auto index = client.Get("/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200);
  EXPECT_NE(index->body.find(R"(href="/metrics")"), std::string::npos) << index->body;
  const auto missing = client.Get("/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  stop(exporter, SIGTERM);
}

// A process that exits while it holds the time slice never leaves its slot (the interposer does
// nothing at exit), so its slice is still the holder's when the exporter looks. The report counts
// the slice in progress only up to the holder's last observed launch, so gpu_seconds_total stays
// where it was however long the dead holder is not swept, and never exceeds the run's wall time.
TEST_F(ExporterTest, ATenantThatExitedHoldingTheSliceStopsAccruingGpuTime) {
  const auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(run_compute_workload().exit_code, 0);
  const std::chrono::duration<double> compute_wall = std::chrono::steady_clock::now() - started;
  Exporter exporter = start_exporter({"--listen", "127.0.0.1:0", "--state", state_});
  ASSERT_GT(exporter.port, 0);
  const auto gpu_seconds = [&]() -> std::optional<double> {
    const auto value = scrape(exporter).value("gpushare_tenant_gpu_seconds_total", {{"tenant", "compute"}});
    if (!value) return std::nullopt;
    return std::stod(*value);
  };
  const auto first = gpu_seconds();
  ASSERT_TRUE(first.has_value()) << "no gpushare_tenant_gpu_seconds_total for compute";
  EXPECT_GT(*first, 0);
  // Not an ordering of processes: the time over which the figure must not grow.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(gpu_seconds(), first);
  EXPECT_LE(*first, compute_wall.count());
  stop(exporter, SIGTERM);
}

// Under Kubernetes the agent writes which pod each tenant is; the exporter adds those labels to
// the tenant's samples, follows the file as it is replaced, and when it is damaged serves the
// figures without them, with the reason in one comment and once on stderr.
TEST_F(ExporterTest, TenantSamplesCarryThePodLabelsOfTheTenantLabelsFile) {
  Process holder({GPUSHARE_TEST_PROBE, "linked", "hold", std::to_string(40 * kMiB), path("ready")},
                 tenant_env("team-a/hold", "64MiB"));
  ASSERT_TRUE(wait_until([&] { return fs::exists(path("ready")); }));
  const std::string labels = path("tenant-labels.json");
  // As the agent does it: a whole new file renamed over the old one.
  const auto replace_labels = [&](const std::string& text) {
    const std::string temporary = labels + ".new";
    std::ofstream(temporary) << text;
    fs::rename(temporary, labels);
  };
  replace_labels(R"({"version":1,"tenants":{"team-a/hold":{"namespace":"team-a","pod":"hold-0","container":"cuda"}}})");

  Exporter exporter = start_exporter({"--listen", "127.0.0.1:0", "--state", state_, "--tenant-labels", labels});
  ASSERT_GT(exporter.port, 0);
  const std::map<std::string, std::string> hold{{"tenant", "team-a/hold"}};
  Exposition metrics = scrape(exporter);
  EXPECT_EQ(metrics.value("gpushare_up"), "1");
  EXPECT_TRUE(metrics.comments.empty());
  EXPECT_EQ(
      metrics.value("gpushare_tenant_memory_used_bytes",
                    {{"tenant", "team-a/hold"}, {"namespace", "team-a"}, {"pod", "hold-0"}, {"container", "cuda"}}),
      std::to_string(40 * kMiB));
  EXPECT_EQ(metrics.value("gpushare_tenant_live_processes", {{"namespace", "team-a"}, {"pod", "hold-0"}}), "1");

  // The container no longer known: its label goes, the others stay.
  replace_labels(R"({"version":1,"tenants":{"team-a/hold":{"namespace":"team-a","pod":"hold-0","container":""}}})");
  metrics = scrape(exporter);
  for (const Sample& sample : metrics.samples) {
    if (sample.labels.count("tenant") == 0) continue;
    EXPECT_EQ(sample.labels.count("container"), 0u) << sample.name;
    EXPECT_EQ(sample.labels.at("pod"), "hold-0") << sample.name;
  }

  // Damaged: the same figures without pod labels, the reason in one comment, and the scrape a success.
  replace_labels(R"({"version":1,"tenants":{"team-a/hold":)");
  for (int scrapes = 0; scrapes < 3; ++scrapes) {
    metrics = scrape(exporter);
    EXPECT_EQ(metrics.value("gpushare_up"), "1");
    ASSERT_EQ(metrics.comments.size(), 1u);
    EXPECT_NE(metrics.comments[0].find(labels), std::string::npos) << metrics.comments[0];
    EXPECT_EQ(metrics.value("gpushare_tenant_memory_used_bytes", hold), std::to_string(40 * kMiB));
    for (const Sample& sample : metrics.samples) EXPECT_EQ(sample.labels.count("pod"), 0u) << sample.name;
  }

  // Mended, then gone: labels again, then none, and no comment either way.
  replace_labels(R"({"version":1,"tenants":{"team-a/hold":{"namespace":"team-a","pod":"hold-1","container":""}}})");
  metrics = scrape(exporter);
  EXPECT_TRUE(metrics.comments.empty());
  EXPECT_EQ(metrics.value("gpushare_tenant_memory_used_bytes", {{"pod", "hold-1"}}), std::to_string(40 * kMiB));
  fs::remove(labels);
  metrics = scrape(exporter);
  EXPECT_TRUE(metrics.comments.empty());
  EXPECT_EQ(metrics.value("gpushare_tenant_memory_used_bytes", hold), std::to_string(40 * kMiB));
  for (const Sample& sample : metrics.samples) EXPECT_EQ(sample.labels.count("namespace"), 0u) << sample.name;

  exporter.process->kill(SIGTERM);
  const ProcessResult stopped = exporter.process->wait();
  EXPECT_EQ(stopped.exit_code, 0);
  // One line when the file became unusable (not one per scrape), one when it was readable again.
  const auto count = [&](const std::string& text) {
    std::size_t found = 0;
    for (auto at = stopped.err.find(text); at != std::string::npos; at = stopped.err.find(text, at + 1)) ++found;
    return found;
  };
  EXPECT_EQ(count("tenant labels not used: " + labels), 1u) << stopped.err;
  EXPECT_EQ(count("tenant labels at " + labels + " are readable again"), 1u) << stopped.err;
}

TEST_F(ExporterTest, WithoutAStateFileItServesUpZeroAndCreatesNone) {
  // The state path from $GPUSHARE_STATE, as other commands take it when --state is not given.
  Exporter exporter = start_exporter({"--listen", "127.0.0.1:0"}, {{"GPUSHARE_STATE", state_}});
  ASSERT_GT(exporter.port, 0);
  const Exposition metrics = scrape(exporter);
  EXPECT_EQ(metrics.value("gpushare_up"), "0");
  EXPECT_TRUE(metrics.value("gpushare_exporter_build_info").has_value());
  ASSERT_EQ(metrics.comments.size(), 1u);
  EXPECT_NE(metrics.comments[0].find(state_), std::string::npos) << metrics.comments[0];
  EXPECT_FALSE(fs::exists(state_)) << "the exporter must never create the state";
  stop(exporter, SIGINT);
}

TEST_F(ExporterTest, ABadListenAddressExitsTwoWithAClearMessage) {
  for (const char* listen : {"nonsense", "127.0.0.1:", ":9400", "127.0.0.1:65536", "::1:9400"}) {
    const ProcessResult r = run({GPUSHARE_TEST_TOOL, "exporter", "--listen", listen, "--state", state_}, {});
    EXPECT_EQ(r.exit_code, 2) << listen;
    EXPECT_NE(r.err.find(std::string("--listen \"") + listen + "\""), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("HOST:PORT"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
  EXPECT_EQ(run({GPUSHARE_TEST_TOOL, "exporter", "--no-such-option"}, {}).exit_code, 2);
}

// Run directly (not through `gpushare exporter`), an empty state path meant the default one. The
// refusal is the one every command prints, naming the default once.
TEST_F(ExporterTest, AnEmptyStatePathIsRefused) {
  const auto expect_refused = [](const ProcessResult& r, const std::string& reason) {
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err.find("gpushare exporter: " + reason), 0u) << r.err;
    const auto mention = r.err.find("use the default");
    ASSERT_NE(mention, std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("use the default", mention + 1), std::string::npos) << r.err;
  };
  expect_refused(run({GPUSHARE_TEST_EXPORTER, "--listen", "127.0.0.1:0", "--state", ""}, {}), "--state: empty path");
  expect_refused(run({GPUSHARE_TEST_EXPORTER, "--listen", "127.0.0.1:0"}, {{"GPUSHARE_STATE", ""}}),
                 "GPUSHARE_STATE is set but empty");
}

TEST_F(ExporterTest, APortInUseExitsOneAndLeavesTheFirstExporterServing) {
  Exporter first = start_exporter({"--listen", "127.0.0.1:0", "--state", state_});
  ASSERT_GT(first.port, 0);
  const std::string taken = "127.0.0.1:" + std::to_string(first.port);
  const ProcessResult second = run({GPUSHARE_TEST_TOOL, "exporter", "--listen", taken, "--state", state_}, {});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("cannot listen on " + taken), std::string::npos) << second.err;
  EXPECT_EQ(scrape(first).value("gpushare_up"), "0");
  stop(first, SIGTERM);
}

}  // namespace
}  // namespace gpushare::testing
