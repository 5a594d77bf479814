#include "tenancy.hpp"

#include <pthread.h>
#include <unistd.h>

#include <array>
#include <cstdlib>

#include "core/compute_slot_release.hpp"
#include "core/tenant_name.hpp"
#include "driver.hpp"
#include "log.hpp"
#include "trace_recorder.hpp"

namespace gpushare::interpose {
namespace {

std::mutex g_tenancy_mutex;  // constant-initialised: no constructor runs at load time
}  // namespace

namespace {
// Never destroyed, like the tenancy: a driver call may still arrive while the process exits.
std::atomic<const LoadedSettings*> g_settings{nullptr};
std::mutex g_settings_mutex;
}  // namespace

const LoadedSettings& process_settings() {
  if (const LoadedSettings* settings = g_settings.load(std::memory_order_acquire)) return *settings;
  std::lock_guard lock(g_settings_mutex);
  if (g_settings.load(std::memory_order_acquire) == nullptr) {
    g_settings.store(new LoadedSettings(load_settings([](const char* name) { return std::getenv(name); })),
                     std::memory_order_release);
  }
  return *g_settings.load(std::memory_order_acquire);
}

bool install_process_settings(LoadedSettings settings) {
  // Until the tenancy starts, the settings may still change: what read them before (a log line, a
  // dlsym lookup of a driver name) used only values a linked program cannot set. Holding the
  // tenancy mutex keeps a starting tenancy from reading them half-way.
  std::lock_guard starting(g_tenancy_mutex);
  if (Tenancy::if_started() != nullptr) return false;
  std::lock_guard lock(g_settings_mutex);
  // The previous settings are never freed: a thread may still hold a reference to them.
  g_settings.store(new LoadedSettings(std::move(settings)), std::memory_order_release);
  return true;
}

bool log_enabled(LogLevel level) { return level <= process_settings().settings.log_level; }

void log_line(std::string_view line) {
  std::string text = fmt::format("gpushare: {}\n", line);
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, text.data(), text.size());
}

namespace {
struct RepeatedLog {
  std::atomic<std::uint64_t> last_ns{0};
  std::atomic<std::uint64_t> held_back{0};
};
std::array<RepeatedLog, static_cast<std::size_t>(Repeated::kCount)> g_repeated{};
}  // namespace

bool may_log_repeated(Repeated kind, std::uint64_t* left_out) {
  RepeatedLog& entry = g_repeated[static_cast<std::size_t>(kind)];
  const std::uint64_t now = monotonic_now_ns();
  std::uint64_t last = entry.last_ns.load(std::memory_order_relaxed);
  if ((last != 0 && now - last < kLimitedLogIntervalNs) ||
      !entry.last_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    entry.held_back.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  *left_out = entry.held_back.exchange(0, std::memory_order_relaxed);
  return true;
}

std::atomic<Tenancy*> Tenancy::instance_{nullptr};

Tenancy& Tenancy::start_once() {
  Tenancy* tenancy = nullptr;
  {
    std::lock_guard lock(g_tenancy_mutex);
    if (Tenancy* started = instance_.load(std::memory_order_acquire)) return *started;
    tenancy = new Tenancy();
    tenancy->start();
    static std::once_flag atfork_registered;
    std::call_once(atfork_registered, [] { ::pthread_atfork(nullptr, nullptr, &Tenancy::forget_after_fork); });
    instance_.store(tenancy, std::memory_order_release);
  }
  // Outside the lock: CUPTI calls the driver, and so these hooks, as it starts.
  trace::start_if_asked(*tenancy);
  return *tenancy;
}

void Tenancy::forget_after_fork() {
  // The child must not spend its parent's slot: drop it (closing only the child's copy of the
  // descriptor, so the parent keeps its lock) and join afresh on the child's first driver call.
  if (Tenancy* tenancy = instance_.load(std::memory_order_acquire)) {
    if (tenancy->membership_) tenancy->membership_->abandon();
    if (tenancy->agent_) tenancy->agent_->abandon();
    instance_.store(nullptr, std::memory_order_release);
  }
}

void Tenancy::start() {
  const LoadedSettings& loaded = process_settings();
  const Settings& settings = loaded.settings;
  auto fail = [&](const std::string& why) {
    mode_ = settings.on_error == FailPolicy::kOpen ? Mode::kPassThrough : Mode::kDenyAll;
    failure_ = why;
    log(LogLevel::kError, "{}; {}", why,
        mode_ == Mode::kDenyAll ? "device allocations will fail (GPUSHARE_ON_ERROR=closed)"
                                : "running without quotas (GPUSHARE_ON_ERROR=open)");
  };
  if (!loaded.errors.empty()) {
    std::string all;
    for (const auto& error : loaded.errors) all += (all.empty() ? "" : "; ") + error;
    return fail(all);
  }
  if (const auto socket = agent_socket_path()) {
    if (const std::string why = start_with_agent(*socket, settings); !why.empty()) return fail(why);
    return;
  }
  const StatePath state_path = resolved_state_path(settings);
  const std::string& path = state_path.path;
  auto state = SharedState::open(path, SharedState::Mode::kCreateIfMissing, state_path.origin());
  if (!state) return fail(state.error().message);
  state_ = std::move(state).value();
  tenant_ = settings.tenant.empty() ? per_process_tenant_name() : settings.tenant;
  const std::string& tenant = tenant_;
  install_compute_slot_release();
  auto membership = TenantMembership::join(*state_, tenant);
  if (!membership) return fail(membership.error().message);
  membership_ = std::move(membership).value();
  auto policy = membership_->adopt_compute_policy(settings.compute);
  if (!policy) return fail(policy.error().message);
  const ComputePolicyValues& in_force = policy.value();
  if (in_force.share_pct != settings.compute.share_pct || in_force.limit_pct != settings.compute.limit_pct ||
      in_force.priority != settings.compute.priority) {
    log(LogLevel::kWarn,
        "tenant '{}' already runs with share {}%, limit {}%, priority {}; keeping them (change them with "
        "`gpushare quota set`)",
        tenant, in_force.share_pct, in_force.limit_pct, priority_name(in_force.priority));
  }
  gate_ = std::make_unique<ComputeGate>(*state_, membership_->slot_index());
  log(LogLevel::kInfo, "joined tenant '{}' in {} (slot {})", tenant, path, membership_->slot_index());
}

std::string Tenancy::start_with_agent(const std::string& socket_path, const Settings& settings) {
  auto link = AgentLink::connect(socket_path, settings);
  if (!link) return link.error().message;
  agent_ = std::move(link).value();
  tenant_ = agent_->tenant_name();
  gate_ = std::make_unique<ComputeGate>(agent_->shared_state(), agent_->slot_index(), ArbiterTiming{}, agent_.get());
  const ComputePolicyValues& in_force = agent_->compute_policy();
  log(LogLevel::kInfo, "joined tenant '{}' through the agent at {} (slot {}; share {}%, limit {}%, priority {})",
      tenant_, socket_path, agent_->slot_index(), in_force.share_pct, in_force.limit_pct,
      priority_name(in_force.priority));
  return {};
}

std::optional<std::uint32_t> Tenancy::gpu_for(CUdevice ordinal) {
  if (ordinal < 0 || ordinal >= kMaxDeviceOrdinals) return std::nullopt;
  DeviceBinding& binding = devices_[static_cast<std::size_t>(ordinal)];
  if (const int gpu = binding.gpu.load(std::memory_order_acquire); gpu >= 0) return static_cast<std::uint32_t>(gpu);

  // A GPU the state has no record for is tried again once a second, not at every call.
  const std::uint64_t now = monotonic_now_ns();
  if (binding.untracked.load(std::memory_order_acquire) &&
      now < binding.retry_at_ns.load(std::memory_order_relaxed)) {
    return std::nullopt;
  }
  std::lock_guard lock(bind_mutex_);
  if (const int gpu = binding.gpu.load(std::memory_order_acquire); gpu >= 0) return static_cast<std::uint32_t>(gpu);
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuDeviceTotalMem_v2 == nullptr) return std::nullopt;
  CUuuid uuid{};
  auto get_uuid = driver->cuDeviceGetUuid_v2 != nullptr ? driver->cuDeviceGetUuid_v2 : driver->cuDeviceGetUuid;
  if (get_uuid == nullptr || get_uuid(&uuid, ordinal) != CUDA_SUCCESS) return std::nullopt;
  std::size_t physical = 0;
  if (driver->cuDeviceTotalMem_v2(&physical, ordinal) != CUDA_SUCCESS) return std::nullopt;
  GpuUuid key{};
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(uuid.bytes[i]);
  const std::uint64_t wanted = process_settings().settings.memory_limit_for(ordinal);
  std::array<char, layout::kGpuNameBytes> name{};
  if (driver->cuDeviceGetName == nullptr ||
      driver->cuDeviceGetName(name.data(), static_cast<int>(name.size() - 1), ordinal) != CUDA_SUCCESS) {
    name[0] = '\0';
  }
  auto attached = agent_ ? agent_->attach_gpu(key, ordinal, physical, wanted, std::string_view(name.data()))
                        : membership_->attach_gpu(key, physical, wanted, std::string_view(name.data()));
  if (!attached) {
    const bool closed = process_settings().settings.on_error == FailPolicy::kClosed;
    log_repeated(Repeated::kUntrackedGpu, LogLevel::kError, "cannot track device {}: {}; {}", ordinal,
                 attached.error().message,
                 closed ? "its allocations fail (GPUSHARE_ON_ERROR=closed)"
                        : "its allocations are not counted (GPUSHARE_ON_ERROR=open)");
    binding.retry_at_ns.store(now + kUntrackedRetryNs, std::memory_order_relaxed);
    binding.untracked.store(true, std::memory_order_release);
    return std::nullopt;
  }
  if (binding.untracked.exchange(false, std::memory_order_acq_rel)) {
    log(LogLevel::kWarn, "device {}: tracked again, its allocations are counted from now on", ordinal);
  }
  if (attached->limit_differs) {
    log(LogLevel::kWarn,
        "device {} ({}): this tenant's limit is {}, this process asked for {}; keeping {} (change it with "
        "`gpushare quota set`)",
        ordinal, format_gpu_uuid(key), format_size(attached->effective_limit_bytes), format_size(wanted),
        format_size(attached->effective_limit_bytes));
  }
  binding.physical_bytes = physical;
  trace::gpu_bound(ordinal, attached->gpu, format_gpu_uuid(key), std::string_view(name.data()));
  binding.gpu.store(static_cast<int>(attached->gpu), std::memory_order_release);
  return attached->gpu;
}

bool Tenancy::context_charge_paid(CUdevice ordinal) {
  const std::uint64_t charge = process_settings().settings.context_memory_bytes;
  if (charge == 0) return true;
  DeviceBinding& binding = devices_[static_cast<std::size_t>(ordinal)];
  if (binding.context_paid.load(std::memory_order_acquire)) return true;
  std::lock_guard lock(bind_mutex_);
  if (binding.context_paid.load(std::memory_order_acquire)) return true;
  const auto gpu = static_cast<std::uint32_t>(binding.gpu.load(std::memory_order_acquire));
  auto reserved = try_reserve(gpu, charge);
  if (!reserved || reserved.value() != Reservation::kGranted) {
    log_repeated(Repeated::kContextCharge, LogLevel::kError,
                 "device {}: the quota has no room for this process's context charge (GPUSHARE_CONTEXT_MEMORY={}): "
                 "its allocations fail",
                 ordinal, format_size(charge));
    return false;
  }
  binding.context_paid.store(true, std::memory_order_release);
  return true;
}

bool Tenancy::untracked(CUdevice ordinal) const {
  if (ordinal < 0 || ordinal >= kMaxDeviceOrdinals) return false;
  return devices_[static_cast<std::size_t>(ordinal)].untracked.load(std::memory_order_acquire);
}

bool Tenancy::refuses_uncounted() const {
  return mode_ == Mode::kDenyAll || process_settings().settings.on_error == FailPolicy::kClosed;
}

std::uint64_t Tenancy::physical_bytes(CUdevice ordinal) const {
  if (ordinal < 0 || ordinal >= kMaxDeviceOrdinals) return 0;
  return devices_[static_cast<std::size_t>(ordinal)].physical_bytes;
}

}  // namespace gpushare::interpose
