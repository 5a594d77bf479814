#include "tenant_view.hpp"

#include <dlfcn.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "core/memory_view.hpp"
#include "core/settings.hpp"
#include "core/size.hpp"

namespace gpushare::nvml {

MemoryFigures tenant_figures(const MemoryFigures& real, const TenantQuota& quota) {
  const TenantMemory view = tenant_memory_view({.total_bytes = real.total, .free_bytes = real.free},
                                               {.limit_bytes = quota.limit_bytes, .used_bytes = quota.used_bytes});
  return MemoryFigures{.total = view.total_bytes, .free = view.free_bytes, .used = view.used_bytes};
}

std::optional<TenantQuota> find_tenant_quota(const std::vector<TenantSnapshot>& tenants, std::string_view tenant,
                                             std::string_view gpu_uuid,
                                             std::optional<std::uint64_t> environment_limit) {
  // MIG instances ("MIG-…") have no ledger of their own; quotas are per whole GPU.
  if (tenant.empty() || !gpu_uuid.starts_with("GPU-")) return std::nullopt;
  const auto quota_of = [](std::uint64_t limit, std::uint64_t used) -> std::optional<TenantQuota> {
    if (limit == kUnlimited) return std::nullopt;
    return TenantQuota{limit, used};
  };
  const auto found = std::find_if(tenants.begin(), tenants.end(),
                                  [&](const TenantSnapshot& snapshot) { return snapshot.name == tenant; });
  // A tenant without a live process starts afresh with its next process's limits.
  const bool live = found != tenants.end() &&
                    std::any_of(found->processes.begin(), found->processes.end(),
                                [](const ProcessSnapshot& process) { return process.alive; });
  if (live) {
    for (const LedgerSnapshot& ledger : found->gpus) {
      if (format_gpu_uuid(ledger.uuid) == gpu_uuid) return quota_of(ledger.limit_bytes, ledger.used_bytes);
    }
    if (found->override_limit_bytes) return quota_of(*found->override_limit_bytes, 0);
  }
  if (!environment_limit) return std::nullopt;
  return quota_of(*environment_limit, 0);
}

void TenantQuotaLookup::read_environment() {
  environment_read_ = true;
  const LoadedSettings loaded = load_settings([](const char* name) { return std::getenv(name); });
  // The preload library refuses such settings too; the card is then shown as it is.
  if (!loaded.errors.empty()) return;
  const Settings& settings = loaded.settings;
  tenant_ = settings.tenant;
  const StatePath state_path = resolved_state_path(settings);
  state_origin_ = state_path.origin();
  state_path_ = state_path.path;
  if (agent_socket_path()) {
    // The agent's policy decides the tenant and its limits (the variables only lower them): the
    // ledger in the agent's state is the one truth, read once the preload library has joined.
    through_agent_ = true;
    tenant_.clear();
    if (settings.state_path.empty()) state_path_ = kAgentStatePath;
    return;
  }
  // Per-device limits are keyed by CUDA ordinal, which NVML's device numbering does not follow.
  if (settings.device_memory_limit_bytes.empty()) environment_limit_ = settings.memory_limit_bytes;
}

std::string TenantQuotaLookup::joined_tenant() {
  using TenantName = const char* (*)();
  const auto name = reinterpret_cast<TenantName>(::dlsym(RTLD_DEFAULT, "gpushare_tenant_name"));
  const char* joined = name != nullptr ? name() : nullptr;
  return joined != nullptr ? std::string(joined) : std::string();
}

std::optional<TenantQuota> TenantQuotaLookup::find(std::string_view gpu_uuid) {
  std::lock_guard lock(mutex_);
  if (!environment_read_) read_environment();
  if (through_agent_ && tenant_.empty()) tenant_ = joined_tenant();
  if (tenant_.empty()) return std::nullopt;
  if (state_ == nullptr) {
    struct stat info {};
    if (::stat(state_path_.c_str(), &info) != 0) {
      // No state yet: no process of any tenant has used a GPU, this one's included.
      if (errno == ENOENT) return find_tenant_quota({}, tenant_, gpu_uuid, environment_limit_);
      return std::nullopt;
    }
    // Only looks: a state nobody uses is never created from here.
    auto opened = SharedState::open(state_path_, SharedState::Mode::kReadOnly, state_origin_);
    if (!opened) return std::nullopt;
    state_ = std::move(opened).value();
  }
  return find_tenant_quota(snapshot_tenants(*state_), tenant_, gpu_uuid, environment_limit_);
}

}  // namespace gpushare::nvml
