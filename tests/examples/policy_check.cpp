// Loads a policy file with the node agent's own loader (agent/policy.hpp), as `gpushare agent
// --policy FILE` does, and prints what it grants, for the examples' tests:
//   policy_check FILE [CGROUP...]
// prints one line per tenant, "tenant NAME cgroups=P1,P2 memory=BYTES|unlimited share=N limit=N",
// a line "default refuse" or "default NAME ...", then for each CGROUP the tenant a process of
// uid 1000 running there gets ("cgroup PATH -> NAME" or "cgroup PATH -> refused").
// Exit status 0; 1 with the loader's message on stderr when the file is refused; 2 for bad usage.
#include <cstdint>
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "identity.hpp"
#include "policy.hpp"

namespace {

std::string describe(const gpushare::agent::TenantLimits& limits) {
  std::string memory =
      limits.memory_bytes == gpushare::kUnlimited ? std::string("unlimited") : std::to_string(limits.memory_bytes);
  return fmt::format("memory={} share={} limit={}", memory, limits.compute.share_pct, limits.compute.limit_pct);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs("usage: policy_check FILE [CGROUP...]\n", stderr);
    return 2;
  }
  auto loaded = gpushare::agent::load_policy(argv[1]);
  if (!loaded) {
    fmt::print(stderr, "{}\n", loaded.error().message);
    return 1;
  }
  const auto& policy = loaded.value();
  for (const auto& rule : policy.tenants) {
    fmt::print("tenant {} cgroups={} {}\n", rule.name, fmt::join(rule.cgroups, ","), describe(rule.limits));
  }
  if (policy.fallback.refuse) {
    fmt::print("default refuse\n");
  } else {
    fmt::print("default {} {}\n", policy.fallback.tenant, describe(policy.fallback.limits));
  }
  for (int i = 2; i < argc; ++i) {
    constexpr std::uint32_t kUser = 1000;
    auto assignment = gpushare::agent::assign(policy, {kUser, kUser, 1, argv[i]});
    fmt::print("cgroup {} -> {}\n", argv[i], assignment ? assignment.value().tenant : std::string("refused"));
  }
  return 0;
}
