// The arbiter's part in the registry's lifecycle (RegistryHooks, registry.hpp): a slot given up
// loses its slice and its waiting marks, a GPU record given to another GPU starts with a fresh
// schedule, and each sweep recounts the waiters.
#pragma once

#include "core/registry.hpp"

namespace gpushare {

// Adds compute_registry_hooks() to the registry's list. Every program that joins tenants or sweeps
// (the preload library, `gpushare status` and `quota set`, tests) calls it before the first
// registry call; calling it again does nothing. Needs no ComputeGate.
void install_compute_slot_release();
const RegistryHooks& compute_registry_hooks();

}  // namespace gpushare
