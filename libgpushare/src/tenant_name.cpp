#include "core/tenant_name.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>

#include <fmt/format.h>

#include "core/platform.hpp"

namespace gpushare {

Status validate_tenant_name(std::string_view name) {
  if (name.empty()) return Error{"tenant name is empty"};
  if (name.size() >= layout::kTenantNameBytes) {
    return Error{fmt::format("tenant name '{}' is longer than {} bytes", name, layout::kTenantNameBytes - 1)};
  }
  for (char c : name) {
    if (c <= ' ' || c >= 127) {
      return Error{fmt::format("tenant name '{}' contains a space or a non-printable character", name)};
    }
  }
  return Ok{};
}

std::string normalize_tenant_name(std::string_view name) {
  std::string out;
  bool replaced = false;
  for (char c : name) {
    const bool unprintable = c <= ' ' || c >= 127;  // signed: bytes past 127 are negative
    out += unprintable ? '_' : c;
    replaced = replaced || unprintable;
  }
  constexpr std::size_t kMax = layout::kTenantNameBytes - 1;
  if (!replaced && out.size() <= kMax) return out;
  // A hash of the whole name keeps apart names that differ only where characters were replaced
  // ("a b" and "a_b") or in what was cut; a long name keeps its tail (the distinctive part of a path).
  const auto* bytes = reinterpret_cast<const unsigned char*>(name.data());
  const std::string tag = fmt::format("~{:016x}", layout::fnv1a(bytes, name.size()));
  if (out.size() + tag.size() <= kMax) return out + tag;
  return out.substr(out.size() - (kMax - tag.size())) + tag;
}

namespace {

// A 64-bit finalizer (SplitMix64's): every bit of the result depends on every bit of `entropy`, so
// entropy differing only in low bits (clock ticks) changes the digits taken from the top.
std::uint64_t mix_entropy(std::uint64_t entropy) {
  std::uint64_t mix = entropy;
  mix = (mix ^ (mix >> 30)) * 0xbf58476d1ce4e5b9ull;
  mix = (mix ^ (mix >> 27)) * 0x94d049bb133111ebull;
  return mix ^ (mix >> 31);
}

// The wall clock, and the process id in bits the clock's nanoseconds rarely reach: processes
// started at the same instant differ.
std::uint64_t own_process_id() { return static_cast<std::uint64_t>(::getpid()); }
std::uint64_t clock_entropy() {
  return unix_now_ns() ^ (own_process_id() << 40);
}

}  // namespace

std::string generate_tenant_name(std::string_view command, std::uint64_t entropy) {
  std::string base = std::filesystem::path(command).filename().string();
  if (base.size() > 48) base.resize(48);
  const auto digits = static_cast<std::uint32_t>(mix_entropy(entropy) >> 40);
  return normalize_tenant_name(fmt::format("{}-{:06x}", base, digits));
}

std::string generate_tenant_name(std::string_view command) { return generate_tenant_name(command, clock_entropy()); }

std::string hami_tenant_name(std::string_view cache_path, const char* hostname) {
  std::string base = hostname != nullptr && *hostname != '\0' ? hostname : "hami";
  if (base.size() > 63) base.resize(63);  // a pod's name is at most 63 characters as a hostname
  const auto* bytes = reinterpret_cast<const unsigned char*>(cache_path.data());
  const auto tag = static_cast<std::uint32_t>(layout::fnv1a(bytes, cache_path.size()));
  return normalize_tenant_name(fmt::format("{}-{:08x}", base, tag));
}

std::string per_process_tenant_name(std::uint64_t pid, std::uint64_t entropy) {
  return fmt::format("pid{}-{:08x}", pid, static_cast<std::uint32_t>(mix_entropy(entropy) >> 32));
}

std::string per_process_tenant_name() { return per_process_tenant_name(own_process_id(), clock_entropy()); }

namespace {
// The name stored in a record, nullopt when it has no terminating NUL (written over, or half made).
std::optional<std::string_view> stored_name(const layout::TenantRecord& record) {
  const char* end = static_cast<const char*>(::memchr(record.name, '\0', sizeof record.name));
  if (end == nullptr) return std::nullopt;
  return std::string_view(record.name, static_cast<std::size_t>(end - record.name));
}
}  // namespace

std::string tenant_name_of(const layout::TenantRecord& record) { return std::string(stored_name(record).value_or("")); }

bool tenant_name_is(const layout::TenantRecord& record, std::string_view name) { return stored_name(record) == name; }

void store_tenant_name(layout::TenantRecord& record, std::string_view name) {
  const std::size_t bytes = std::min(name.size(), sizeof record.name - 1);
  std::memset(record.name, 0, sizeof record.name);
  std::memcpy(record.name, name.data(), bytes);
}

}  // namespace gpushare
