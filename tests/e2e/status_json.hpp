// `gpushare status --json` read by tests: parsed with nlohmann-json, and polled for an event
// (a tenant holding the time slice, a tenant on a GPU) instead of sleeping and hoping it happened.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace gpushare::testing {

using Json = nlohmann::json;

// The report of the state at `state`; nullopt when the command fails or its output does not
// parse (with the reason in *why).
inline std::optional<Json> read_status(const std::string& state, std::string* why = nullptr) {
  const ProcessResult status = run({GPUSHARE_TEST_TOOL, "status", "--json", "--state", state}, {});
  if (status.exit_code != 0) {
    if (why != nullptr) *why = "exit " + std::to_string(status.exit_code) + ": " + status.err;
    return std::nullopt;
  }
  try {
    return Json::parse(status.out);
  } catch (const Json::exception& error) {
    if (why != nullptr) *why = std::string(error.what()) + " in: " + status.out;
    return std::nullopt;
  }
}

// `tenant`'s entry in gpus[].tenants of the first GPU it has used; null when it has used none.
inline const Json* tenant_on_gpu(const Json& status, const std::string& tenant) {
  for (const Json& gpu : status.at("gpus")) {
    for (const Json& use : gpu.at("tenants")) {
      if (use.at("tenant") == tenant) return &use;
    }
  }
  return nullptr;
}

// A process of `tenant` holds the time slice of a GPU.
inline bool holds_slice(const Json& status, const std::string& tenant) {
  const Json* use = tenant_on_gpu(status, tenant);
  return use != nullptr && use->at("holds_slice") == true;
}

// `tenant` has a live process that has attached a GPU.
inline bool live_on_a_gpu(const Json& status, const std::string& tenant) {
  const Json* use = tenant_on_gpu(status, tenant);
  return use != nullptr && use->at("live") == true;
}

// Polls the report, 10 ms apart, until `shows` holds for it. Fails naming `what` and the last
// report if that does not happen within `patience`.
inline ::testing::AssertionResult status_shows(const std::string& state, const std::string& what,
                                               const std::function<bool(const Json&)>& shows,
                                               std::chrono::milliseconds patience = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  std::string last = "no report read";
  while (true) {
    std::string why;
    if (const auto status = read_status(state, &why)) {
      if (shows(*status)) return ::testing::AssertionSuccess();
      last = status->dump();
    } else {
      last = why;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return ::testing::AssertionFailure() << "status never showed " << what << " within " << patience.count()
                                           << " ms; last: " << last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace gpushare::testing
