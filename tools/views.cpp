#include "views.hpp"

#include <algorithm>
#include <ctime>
#include <map>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "core/compute_policy.hpp"
#include "core/size.hpp"

namespace gpushare::tools {
namespace {

std::string pct_text(std::uint32_t pct) { return pct == 0 ? "-" : fmt::format("{}%", pct); }
std::string limit_text(std::uint64_t bytes) { return bytes == kUnlimited ? "unlimited" : format_size(bytes); }
double seconds(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }

std::string clock_text(std::uint64_t unix_ns) {
  const std::time_t t = static_cast<std::time_t>(unix_ns / 1'000'000'000);
  std::tm local{};
  ::localtime_r(&t, &local);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S", &local);
  return buffer;
}

const TenantReport* find_tenant(const Report& report, const std::string& name) {
  for (const auto& tenant : report.tenants) {
    if (tenant.name == name) return &tenant;
  }
  return nullptr;
}

std::string shortened(const std::string& text, std::size_t width) {
  if (text.size() <= width) return text;
  return text.substr(0, width - 1) + "~";
}

std::string tenant_state(const TenantReport& tenant) {
  std::size_t alive = 0;
  std::size_t dead = 0;
  for (const auto& process : tenant.processes) (process.alive ? alive : dead) += 1;
  std::string text = alive == 0 ? "inactive (no live process)" : fmt::format("{} live process{}", alive, alive == 1 ? "" : "es");
  if (dead != 0) text += fmt::format(", {} dead, reclaim pending", dead);
  return text;
}

std::string bytes_or_unknown(const std::optional<std::uint64_t>& bytes) {
  return bytes ? format_size(*bytes) : "unknown";
}

// GPU processes the agent's escape watch finds outside the ledger; nothing when there are none.
std::string unaccounted_section(const Report& report) {
  if (report.unaccounted.empty() && report.unaccounted_omitted == 0) return "";
  std::string out = "\nUNACCOUNTED GPU PROCESSES (found by the agent through NVML)\n";
  out += fmt::format("  {:<8} {:<40} {:>10} {:>10} {:>12}  {}\n", "PID", "GPU", "USED", "LEDGER", "UNACCOUNTED",
                     "WHY");
  for (const UnaccountedReport& finding : report.unaccounted) {
    std::string why = finding.known_to_agent ? "over its ledger" : "not connected to the agent";
    if (finding.kill_sent) why += ", killed";
    if (!finding.cgroup.empty()) why += fmt::format(", cgroup {}", finding.cgroup);
    out += fmt::format("  {:<8} {:<40} {:>10} {:>10} {:>12}  {}\n", finding.pid, shortened(finding.gpu_uuid, 40),
                       bytes_or_unknown(finding.used_bytes), format_size(finding.accounted_bytes),
                       bytes_or_unknown(finding.unaccounted_bytes), why);
  }
  if (report.unaccounted_omitted != 0) {
    out += fmt::format("  and {} more the state has no room for\n", report.unaccounted_omitted);
  }
  return out;
}

// GPU indices as people read them: "0,1", runs of three or more as "0-3" ("0-3,6").
std::string gpu_list_text(const std::vector<std::uint32_t>& gpus) {
  std::string text;
  for (std::size_t i = 0; i < gpus.size();) {
    std::size_t last = i;
    while (last + 1 < gpus.size() && gpus[last + 1] == gpus[last] + 1) ++last;
    if (!text.empty()) text += ',';
    if (last - i >= 2) {
      text += fmt::format("{}-{}", gpus[i], gpus[last]);
    } else {
      last = i;
      text += fmt::format("{}", gpus[i]);
    }
    i = last + 1;
  }
  return text;
}

// `tenant`'s figures on `gpu`; null when it has none there.
const TenantOnGpu* find_use(const GpuReport& gpu, const std::string& tenant) {
  for (const auto& use : gpu.tenants) {
    if (use.tenant == tenant) return &use;
  }
  return nullptr;
}

// The slice holder, with its gang's GPUs when it is one: "job (gang on GPUs 0,1)".
std::string holder_text(const GpuReport& gpu) {
  if (!gpu.slice_holder) return "free";
  const TenantOnGpu* use = find_use(gpu, *gpu.slice_holder);
  if (use == nullptr || use->gang_gpus.empty()) return *gpu.slice_holder;
  return fmt::format("{} (gang on GPUs {})", *gpu.slice_holder, gpu_list_text(use->gang_gpus));
}

// After a tenant's row of `status`: its gang and the part of its wait spent holding another GPU;
// nothing for a tenant that is no gang and never waited so.
std::string gang_note(const TenantOnGpu& use) {
  if (use.gang_gpus.empty() && use.peer_wait_ns == 0) return "";
  const std::string peer_wait = fmt::format("peer wait {:.3f}s", seconds(use.peer_wait_ns));
  if (use.gang_gpus.empty()) return fmt::format("  [{}]", peer_wait);
  return fmt::format("  [gang on GPUs {}; {}]", gpu_list_text(use.gang_gpus), peer_wait);
}

// A tenant's name in `top`'s column of `width`, a gang's marked " [gang 0,1]" (" [gang]" when the
// GPUs leave too little of the name), the name cut to make room.
std::string top_name(const TenantOnGpu& use, std::size_t width) {
  if (use.gang_gpus.empty()) return shortened(use.tenant, width);
  std::string mark = fmt::format(" [gang {}]", gpu_list_text(use.gang_gpus));
  constexpr std::size_t kShortestName = 4;
  if (mark.size() + std::min(use.tenant.size(), kShortestName) > width) mark = " [gang]";
  const std::size_t room = width > mark.size() ? width - mark.size() : 1;
  return shortened(use.tenant, room) + mark;
}

}  // namespace

std::string render_status(const Report& report) {
  std::string out = fmt::format("state {}   {}\n", report.state_path, clock_text(report.time_unix_ns));
  if (report.tenants.empty()) out += "no tenants\n";
  for (const GpuReport& gpu : report.gpus) {
    out +=
        fmt::format("\nGPU {}  {}  {}  {}   time slice: {}\n", gpu.index, format_gpu_uuid(gpu.uuid),
                    gpu.name.empty() ? "(unnamed)" : gpu.name, format_size(gpu.memory_total_bytes), holder_text(gpu));
    out += fmt::format("  {:<20} {:>10} {:>10} {:>10} {:>7} {:>5} {:>5} {:>6} {:>10} {:>9} {:>10}\n", "TENANT", "USED",
                       "LIMIT", "PEAK", "REFUSED", "SHARE", "CAP", "PRIO", "GPU TIME", "LAUNCHES", "WAITED");
    for (const TenantOnGpu& use : gpu.tenants) {
      const TenantReport* tenant = find_tenant(report, use.tenant);
      const ComputePolicyValues policy = tenant ? tenant->compute : default_compute_policy();
      out += fmt::format("  {:<20} {:>10} {:>10} {:>10} {:>7} {:>5} {:>5} {:>6} {:>9.3f}s {:>9} {:>9.3f}s{}",
                         shortened(use.tenant, 20), format_size(use.memory_used_bytes),
                         limit_text(use.memory_limit_bytes), format_size(use.memory_peak_bytes), use.oom_refusals,
                         pct_text(policy.share_pct), pct_text(policy.limit_pct), priority_name(policy.priority),
                         seconds(use.gpu_ns), use.launches, seconds(use.wait_ns), use.live ? "" : "  [inactive]");
      out += gang_note(use) + "\n";
    }
  }
  out += "\nTENANTS\n";
  for (const TenantReport& tenant : report.tenants) {
    out += fmt::format("  {}: {}", tenant.name, tenant_state(tenant));
    if (tenant.memory_limit_override_bytes) {
      out += fmt::format("; memory limit set by quota set: {}", limit_text(*tenant.memory_limit_override_bytes));
    }
    out += "\n";
    for (const ProcessReport& process : tenant.processes) {
      std::string held;
      for (const GpuReport& gpu : report.gpus) {
        for (const TenantOnGpu& use : gpu.tenants) {
          if (use.tenant != tenant.name) continue;
          for (const ProcessUse& p : use.processes) {
            if (p.slot == process.slot) held += fmt::format("  GPU {}: {}", gpu.index, format_size(p.held_bytes));
          }
        }
      }
      out += fmt::format("    pid {:<8} {}{}\n", process.pid, process.alive ? "alive" : "DEAD (reclaim pending)", held);
    }
  }
  out += unaccounted_section(report);
  return out;
}

std::string render_top(const Report& report, const Report* previous, int width, double interval_s) {
  std::string out = fmt::format("gpushare top   {}   every {:.1f}s   q quits\n", clock_text(report.time_unix_ns),
                                interval_s);
  out += shortened(fmt::format("state {}", report.state_path), static_cast<std::size_t>(width)) + "\n";
  // Previous GPU time per (gpu, tenant), to turn counters into rates.
  std::map<std::pair<std::uint32_t, std::string>, std::uint64_t> earlier;
  double elapsed_ns = 0;
  if (previous != nullptr && report.monotonic_ns > previous->monotonic_ns) {
    elapsed_ns = static_cast<double>(report.monotonic_ns - previous->monotonic_ns);
    for (const auto& gpu : previous->gpus) {
      for (const auto& use : gpu.tenants) earlier[{gpu.index, use.tenant}] = use.gpu_ns;
    }
  }
  // The fixed columns (sizes are at most 11 characters: "1023.59 MiB"), the bar's brackets and the
  // idle mark take 58; the name and the bar share what is left.
  constexpr int kFixed = 58;
  width = std::max(width, kFixed + 16);
  const int name_width = std::clamp((width - kFixed) / 2, 8, 24);
  const int bar_width = std::max(8, width - kFixed - name_width);
  if (report.gpus.empty()) out += "\nno GPU in use yet\n";
  for (const GpuReport& gpu : report.gpus) {
    std::uint64_t used = 0;
    for (const auto& use : gpu.tenants) used += use.memory_used_bytes;
    // Most useful first: a long GPU name is what gets cut.
    const std::string header =
        fmt::format("GPU {}  slice: {}  used {} of {}  {}  {}", gpu.index, holder_text(gpu), format_size(used),
                    format_size(gpu.memory_total_bytes), gpu.name, format_gpu_uuid(gpu.uuid).substr(0, 12));
    out += "\n" + shortened(header, static_cast<std::size_t>(width)) + "\n";
    out += fmt::format("{:<{}} {:>11} {:>11} {:>6} {:>5} {:>4} {:>6}  {}\n", "TENANT", name_width, "MEMORY", "LIMIT",
                       "GPU%", "SHARE", "CAP", "PRIO", "BUSY (|=share)");
    for (const TenantOnGpu& use : gpu.tenants) {
      const TenantReport* tenant = find_tenant(report, use.tenant);
      const ComputePolicyValues policy = tenant ? tenant->compute : default_compute_policy();
      std::string rate = "-";
      double fraction = 0;
      if (auto before = earlier.find({gpu.index, use.tenant}); elapsed_ns > 0 && before != earlier.end()) {
        const std::uint64_t delta = use.gpu_ns >= before->second ? use.gpu_ns - before->second : 0;
        fraction = std::clamp(static_cast<double>(delta) / elapsed_ns, 0.0, 1.0);
        rate = fmt::format("{:.1f}", fraction * 100);
      }
      // The bar: filled for the GPU time held since the last frame, a '|' where its share (or cap) lies.
      std::string bar(static_cast<std::size_t>(bar_width), '.');
      const auto filled = static_cast<std::size_t>(fraction * bar_width + 0.5);
      std::fill_n(bar.begin(), std::min(filled, bar.size()), '#');
      const std::uint32_t mark = policy.limit_pct != 0 ? policy.limit_pct : policy.share_pct;
      if (mark != 0) {
        const auto at = std::min(bar.size() - 1, static_cast<std::size_t>(mark * bar_width / 100));
        bar[at] = '|';
      }
      out += fmt::format("{:<{}} {:>11} {:>11} {:>6} {:>5} {:>4} {:>6}  [{}]{}\n",
                         top_name(use, static_cast<std::size_t>(name_width)), name_width,
                         format_size(use.memory_used_bytes), limit_text(use.memory_limit_bytes), rate,
                         pct_text(policy.share_pct), pct_text(policy.limit_pct), priority_name(policy.priority), bar,
                         use.live ? "" : " idle");
    }
  }
  std::size_t live = 0;
  for (const auto& tenant : report.tenants) live += tenant.live ? 1 : 0;
  out += fmt::format("\n{} tenant{}, {} live\n", report.tenants.size(), report.tenants.size() == 1 ? "" : "s", live);
  return out;
}

}  // namespace gpushare::tools
