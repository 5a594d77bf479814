// The only way interpose/ includes cuda.h: for types and declarations.
//
// cuda.h renames some entry points with macros (cuGetProcAddress -> cuGetProcAddress_v2,
// cuDeviceGetUuid -> cuDeviceGetUuid_v2, ...). hooks.def names exact exported symbols, so those
// macros are undone here.
#pragma once

#include <cuda.h>

#undef cuGetProcAddress
#undef cuDeviceGetUuid
#undef cuMemAllocAsync
#undef cuMemAllocFromPoolAsync
#undef cuMemFreeAsync
#undef cuStreamGetCtx
#undef cuLaunchKernel
#undef cuLaunchKernelEx
#undef cuLaunchCooperativeKernel
#undef cuGraphLaunch
#undef cuEventRecord
#undef cuStreamSynchronize
