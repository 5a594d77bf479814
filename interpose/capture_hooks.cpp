// Hooks that only keep count for the launch hooks (capture_hooks.hpp): stream captures begun and
// ended, and another process's GPU memory mapped into this one.
#include "capture_hooks.hpp"

#include "hooks.hpp"
#include "tenancy.hpp"

namespace gpushare::interpose::hooks {

std::atomic<int> g_captures{0};
std::atomic<bool> g_imports_memory{false};

namespace {

template <typename Begin>
CUresult capture_begun(Begin&& begin) {
  const CUresult result = begin();
  if (result == CUDA_SUCCESS) g_captures.fetch_add(1, std::memory_order_acq_rel);
  return result;
}
// A capture ends with its graph, or invalidated; other errors (not capturing, wrong thread) leave
// it going. Never below zero: a capture begun through an entry point not counted here.
template <typename End>
CUresult capture_ended(End&& end) {
  const CUresult result = end();
  if (result == CUDA_SUCCESS || result == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) {
    int captures = g_captures.load(std::memory_order_acquire);
    while (captures > 0 && !g_captures.compare_exchange_weak(captures, captures - 1, std::memory_order_acq_rel)) {
    }
  }
  return result;
}

template <typename Open>
CUresult importing_memory(Open&& open) {
  const CUresult result = open();
  if (result == CUDA_SUCCESS) {
    g_imports_memory.store(true, std::memory_order_relaxed);
    // Started or not, never started here: a process that only imports and copies need not join.
    if (Tenancy* tenancy = Tenancy::if_started(); tenancy != nullptr && tenancy->mode() == Tenancy::Mode::kEnforce) {
      tenancy->gate().note_depends_on_other_processes();
    }
  }
  return result;
}

}  // namespace

CUresult cuIpcOpenMemHandle_v2(CUdeviceptr* pdptr, CUipcMemHandle handle, unsigned int Flags)
GPUSHARE_WRAPPED_CALL(cuIpcOpenMemHandle_v2, importing_memory, (pdptr, handle, Flags))
CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle* handle, void* osHandle,
                                        CUmemAllocationHandleType shHandleType)
GPUSHARE_WRAPPED_CALL(cuMemImportFromShareableHandle, importing_memory, (handle, osHandle, shHandleType))

CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCapture_v2, capture_begun, (hStream, mode))
CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCapture_v2_ptsz, capture_begun, (hStream, mode))
CUresult cuStreamBeginCaptureToGraph(CUstream hStream, CUgraph hGraph, const CUgraphNode* dependencies,
                                     const CUgraphEdgeData* dependencyData, size_t numDependencies,
                                     CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCaptureToGraph, capture_begun,
                      (hStream, hGraph, dependencies, dependencyData, numDependencies, mode))
CUresult cuStreamBeginCaptureToGraph_ptsz(CUstream hStream, CUgraph hGraph, const CUgraphNode* dependencies,
                                          const CUgraphEdgeData* dependencyData, size_t numDependencies,
                                          CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCaptureToGraph_ptsz, capture_begun,
                      (hStream, hGraph, dependencies, dependencyData, numDependencies, mode))
CUresult cuStreamEndCapture(CUstream hStream, CUgraph* phGraph)
GPUSHARE_WRAPPED_CALL(cuStreamEndCapture, capture_ended, (hStream, phGraph))
CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph* phGraph)
GPUSHARE_WRAPPED_CALL(cuStreamEndCapture_ptsz, capture_ended, (hStream, phGraph))

}  // namespace gpushare::interpose::hooks
