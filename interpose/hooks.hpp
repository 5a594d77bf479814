// The behaviour behind each exported wrapper. exports.cpp is only the C boundary: one line per
// function that calls into here inside an exception guard.
#pragma once

#include "cuda_api.hpp"

namespace gpushare::interpose::hooks {

#define GPUSHARE_HOOK(name, params, args) CUresult name params;
#define GPUSHARE_USES(name, params)
#include "hooks.def"
#undef GPUSHARE_HOOK
#undef GPUSHARE_USES

// dlsym's result for a symbol looked up through a handle: the wrapper when it is a hooked
// driver entry point.
void* map_dlsym_result(const char* symbol, void* address);

}  // namespace gpushare::interpose::hooks
