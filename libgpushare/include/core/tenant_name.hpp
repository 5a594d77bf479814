// Tenant names, in one place: what a valid one is, how any text becomes one, the name made up for a
// run that was given none, and how a name is kept in a TenantRecord of the shared state.
//
// A name is 1 to kTenantNameBytes - 1 bytes of printable ASCII without spaces. It is stored
// NUL-terminated; since anyone taking part can write the file, a record without a NUL holds no name.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "core/state_layout.hpp"

namespace gpushare {

// Checks a tenant name: 1 to 95 bytes of printable ASCII. Longer names (HAMi passes a file path)
// are shortened deterministically by normalize_tenant_name.
Status validate_tenant_name(std::string_view name);
// Any text as a valid name: unprintable bytes become '_', and a name that had any replaced or is
// too long ends in a hash of the whole text (so distinct texts stay distinct) and keeps its tail.
std::string normalize_tenant_name(std::string_view name);

// The name of a run given none (`gpushare run` without --tenant): the command's file name (at most
// 48 bytes), a dash and six hex digits drawn from `entropy`, normalized. The one-argument form draws
// them from the clock and the process id, so that runs of one command started together differ.
std::string generate_tenant_name(std::string_view command, std::uint64_t entropy);
std::string generate_tenant_name(std::string_view command);

// The name of a container under HAMi, whose only tenant-like word is its per-container cache file
// (CUDA_DEVICE_MEMORY_SHARED_CACHE, a random path): the pod's name where `hostname` (the container's
// HOSTNAME, which Kubernetes sets to the pod's name) is given, else "hami", then a dash and eight hex
// digits of a hash of the path, so that two containers of a pod stay two tenants: "train-0-3f2a9c1d".
std::string hami_tenant_name(std::string_view cache_path, const char* hostname);

// The name of a process that joins with no tenant named (a preloaded program without
// GPUSHARE_TENANT): a tenant of its own, "pid<pid>-" and eight hex digits drawn from `entropy`, so
// that processes with the same id (in two containers, or one after the other) get different names.
// The form without arguments names the calling process, with digits drawn from the clock and its id.
std::string per_process_tenant_name(std::uint64_t pid, std::uint64_t entropy);
std::string per_process_tenant_name();

// The name a record holds; empty when it holds no NUL-terminated one.
std::string tenant_name_of(const layout::TenantRecord& record);
bool tenant_name_is(const layout::TenantRecord& record, std::string_view name);
// REQUIRES: validate_tenant_name(name) passed (it fits, with its NUL).
void store_tenant_name(layout::TenantRecord& record, std::string_view name);

}  // namespace gpushare
