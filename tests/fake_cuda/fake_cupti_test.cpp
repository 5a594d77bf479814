// The fake libcupti.so over the fake driver, as trace mode uses it: dlopened, activity enabled,
// kernels of known durations launched, buffers flushed and walked record by record.
#include <cuda.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../../interpose/cupti_api.hpp"

namespace cupti = gpushare::cupti;

namespace {

// The entry points, typed as cupti_api.hpp lists them.
struct Cupti {
#define GPUSHARE_FAKE_CUPTI_MEMBER(name, type) std::add_pointer_t<type> name = nullptr;
  GPUSHARE_CUPTI_FUNCTIONS(GPUSHARE_FAKE_CUPTI_MEMBER)
#undef GPUSHARE_FAKE_CUPTI_MEMBER
};

struct KernelRecord {
  std::uint64_t start, end;
  std::uint32_t device, stream, correlation;
  std::string name;
};

// What the completed callback saw, and how the requested callback answers.
std::vector<KernelRecord> g_records;
std::size_t g_buffers_completed = 0;
std::size_t g_buffer_bytes = 3 * cupti::kernel_field::kLeastSize;  // 0: give no buffer
const Cupti* g_cupti = nullptr;

void buffer_requested(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records) {
  *size = g_buffer_bytes;
  *max_records = 0;
  *buffer = g_buffer_bytes != 0 ? static_cast<std::uint8_t*>(std::aligned_alloc(8, g_buffer_bytes)) : nullptr;
}

void buffer_completed(void* /*context*/, std::uint32_t /*stream_id*/, std::uint8_t* buffer, std::size_t /*size*/,
                      std::size_t valid_size) {
  ++g_buffers_completed;
  cupti::Activity* record = nullptr;
  cupti::Result result;
  while ((result = g_cupti->cuptiActivityGetNextRecord(buffer, valid_size, &record)) == cupti::kSuccess) {
    EXPECT_EQ(record->kind, cupti::kKindConcurrentKernel);
    namespace field = cupti::kernel_field;
    g_records.push_back(
        {cupti::field<std::uint64_t>(record, field::kStart), cupti::field<std::uint64_t>(record, field::kEnd),
         cupti::field<std::uint32_t>(record, field::kDeviceId), cupti::field<std::uint32_t>(record, field::kStreamId),
         cupti::field<std::uint32_t>(record, field::kCorrelationId), cupti::field<const char*>(record, field::kName)});
  }
  EXPECT_EQ(result, cupti::kErrorMaxLimitReached);
  std::free(buffer);
}

const CUfunction kAnyKernel = reinterpret_cast<CUfunction>(1);

class FakeCupti : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Two devices, numbered in reverse: records must carry the ordinal the process sees.
    setenv("FAKE_CUDA_DEVICE_ORDER", "1,0", 1);
    ASSERT_EQ(cuInit(0), CUDA_SUCCESS);
    library_ = dlopen(FAKE_CUPTI_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(library_, nullptr) << dlerror();
#define GPUSHARE_FAKE_CUPTI_RESOLVE(name, type)                                  \
  cupti_.name = reinterpret_cast<decltype(cupti_.name)>(dlsym(library_, #name)); \
  ASSERT_NE(cupti_.name, nullptr) << #name;
    GPUSHARE_CUPTI_FUNCTIONS(GPUSHARE_FAKE_CUPTI_RESOLVE)
#undef GPUSHARE_FAKE_CUPTI_RESOLVE
    g_cupti = &cupti_;
    for (int ordinal = 0; ordinal < 2; ++ordinal)
      ASSERT_EQ(cuDevicePrimaryCtxRetain(&contexts_[ordinal], ordinal), CUDA_SUCCESS);
  }

  void SetUp() override {
    ASSERT_EQ(cuCtxSetCurrent(contexts_[0]), CUDA_SUCCESS);
    ASSERT_EQ(api().cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), cupti::kSuccess);
    ASSERT_EQ(api().cuptiActivityEnable(cupti::kKindConcurrentKernel), cupti::kSuccess);
    ASSERT_EQ(api().cuptiActivityEnable(cupti::kKindMemcpy), cupti::kSuccess);
    ASSERT_EQ(api().cuptiActivityEnable(cupti::kKindMemset), cupti::kSuccess);
    // Whatever an earlier test left behind.
    ASSERT_EQ(cuCtxSynchronize(), CUDA_SUCCESS);
    ASSERT_EQ(api().cuptiActivityFlushAll(cupti::kFlushForced), cupti::kSuccess);
    g_records.clear();
    g_buffers_completed = 0;
    g_buffer_bytes = 3 * cupti::kernel_field::kLeastSize;
  }

  static const Cupti& api() { return cupti_; }
  static std::uint64_t timestamp() {
    std::uint64_t t = 0;
    EXPECT_EQ(cupti_.cuptiGetTimestamp(&t), cupti::kSuccess);
    return t;
  }
  static CUresult launch(unsigned microseconds, CUstream stream = nullptr) {
    return cuLaunchKernel(kAnyKernel, microseconds, 1, 1, 1, 1, 1, 0, stream, nullptr, nullptr);
  }

  static inline void* library_ = nullptr;
  static inline Cupti cupti_;
  static inline CUcontext contexts_[2] = {};
};

TEST_F(FakeCupti, DeliversLaunchedKernelsInOrderWithTheirDurations) {
  CUstream stream = nullptr;
  ASSERT_EQ(cuStreamCreate(&stream, 0), CUDA_SUCCESS);
  const std::uint64_t before = timestamp();
  const std::vector<unsigned> durations_us{100, 200, 300, 400, 500};
  for (unsigned us : durations_us) ASSERT_EQ(launch(us), CUDA_SUCCESS);
  ASSERT_EQ(launch(150, stream), CUDA_SUCCESS);
  ASSERT_EQ(cuGraphLaunch(reinterpret_cast<CUgraphExec>(250), stream), CUDA_SUCCESS);
  ASSERT_EQ(cuCtxSynchronize(), CUDA_SUCCESS);
  const std::uint64_t after = timestamp();
  ASSERT_EQ(api().cuptiActivityFlushAll(cupti::kFlushForced), cupti::kSuccess);

  ASSERT_EQ(g_records.size(), 7u);
  EXPECT_EQ(g_buffers_completed, 3u);  // three records per buffer
  std::vector<unsigned> expected = durations_us;
  expected.insert(expected.end(), {150, 250});
  for (std::size_t i = 0; i < g_records.size(); ++i) {
    const KernelRecord& r = g_records[i];
    SCOPED_TRACE("record " + std::to_string(i));
    EXPECT_EQ(r.end - r.start, expected[i] * 1000ull);
    EXPECT_GE(r.start, before);
    EXPECT_LE(r.end, after);
    EXPECT_EQ(r.device, 0u);
    EXPECT_EQ(r.name, i == 6 ? "fake_graph" : "fake_kernel");
    if (i > 0) {
      // One engine: each kernel starts once the one launched before it has ended.
      EXPECT_GE(r.start, g_records[i - 1].end);
      EXPECT_GT(r.correlation, g_records[i - 1].correlation);
    }
  }
  for (std::size_t i = 1; i < 5; ++i) EXPECT_EQ(g_records[i].stream, g_records[0].stream);
  EXPECT_NE(g_records[5].stream, g_records[0].stream);
  EXPECT_EQ(g_records[6].stream, g_records[5].stream);

  // Delivered once only.
  ASSERT_EQ(api().cuptiActivityFlushAll(cupti::kFlushForced), cupti::kSuccess);
  EXPECT_EQ(g_records.size(), 7u);
  EXPECT_EQ(cuStreamDestroy(stream), CUDA_SUCCESS);
}

TEST_F(FakeCupti, HoldsBackKernelsUntilTheyComplete) {
  ASSERT_EQ(launch(1000000), CUDA_SUCCESS);  // one second
  ASSERT_EQ(api().cuptiActivityFlushAll(0), cupti::kSuccess);
  EXPECT_EQ(g_records.size(), 0u);
  EXPECT_EQ(g_buffers_completed, 0u);  // no buffer asked for when there is nothing to deliver
  ASSERT_EQ(cuCtxSynchronize(), CUDA_SUCCESS);
  ASSERT_EQ(api().cuptiActivityFlushAll(0), cupti::kSuccess);
  ASSERT_EQ(g_records.size(), 1u);
  EXPECT_EQ(g_records[0].end - g_records[0].start, 1000000000ull);
  EXPECT_LE(g_records[0].end, timestamp());
}

TEST_F(FakeCupti, RecordsTheDeviceOrdinalTheProcessSees) {
  ASSERT_EQ(cuCtxSetCurrent(contexts_[1]), CUDA_SUCCESS);  // physical device 0
  ASSERT_EQ(launch(100), CUDA_SUCCESS);
  ASSERT_EQ(cuCtxSynchronize(), CUDA_SUCCESS);
  ASSERT_EQ(api().cuptiActivityFlushAll(cupti::kFlushForced), cupti::kSuccess);
  ASSERT_EQ(g_records.size(), 1u);
  EXPECT_EQ(g_records[0].device, 1u);
}

TEST_F(FakeCupti, RecordsNothingWhileDisabledOrCapturing) {
  ASSERT_EQ(api().cuptiActivityDisable(cupti::kKindConcurrentKernel), cupti::kSuccess);
  ASSERT_EQ(launch(100), CUDA_SUCCESS);
  ASSERT_EQ(api().cuptiActivityEnable(cupti::kKindConcurrentKernel), cupti::kSuccess);
  CUstream stream = nullptr;
  ASSERT_EQ(cuStreamCreate(&stream, 0), CUDA_SUCCESS);
  ASSERT_EQ(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_RELAXED), CUDA_SUCCESS);
  ASSERT_EQ(launch(100, stream), CUDA_SUCCESS);
  CUgraph graph = nullptr;
  ASSERT_EQ(cuStreamEndCapture(stream, &graph), CUDA_SUCCESS);
  ASSERT_EQ(launch(300), CUDA_SUCCESS);
  ASSERT_EQ(cuCtxSynchronize(), CUDA_SUCCESS);
  ASSERT_EQ(api().cuptiActivityFlushAll(cupti::kFlushForced), cupti::kSuccess);
  ASSERT_EQ(g_records.size(), 1u);
  EXPECT_EQ(g_records[0].end - g_records[0].start, 300000ull);
  EXPECT_EQ(cuStreamDestroy(stream), CUDA_SUCCESS);
}

TEST_F(FakeCupti, CountsRecordsDroppedForWantOfABuffer) {
  g_buffer_bytes = 0;
  for (int i = 0; i < 4; ++i) ASSERT_EQ(launch(50), CUDA_SUCCESS);
  ASSERT_EQ(cuCtxSynchronize(), CUDA_SUCCESS);
  ASSERT_EQ(api().cuptiActivityFlushAll(cupti::kFlushForced), cupti::kSuccess);
  EXPECT_EQ(g_records.size(), 0u);
  std::size_t dropped = 0;
  ASSERT_EQ(api().cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped), cupti::kSuccess);
  EXPECT_EQ(dropped, 4u);
  ASSERT_EQ(api().cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped), cupti::kSuccess);
  EXPECT_EQ(dropped, 0u);  // counted since the last call
}

TEST_F(FakeCupti, WalksAnEmptyBufferToItsEnd) {
  alignas(8) std::uint8_t buffer[cupti::kernel_field::kLeastSize] = {};
  cupti::Activity* record = nullptr;
  EXPECT_EQ(api().cuptiActivityGetNextRecord(buffer, 0, &record), cupti::kErrorMaxLimitReached);
  EXPECT_EQ(record, nullptr);
}

TEST_F(FakeCupti, VersionFromTheEnvironment) {
  std::uint32_t version = 0;
  unsetenv("FAKE_CUPTI_VERSION");
  ASSERT_EQ(api().cuptiGetVersion(&version), cupti::kSuccess);
  EXPECT_EQ(version, 130001u);
  setenv("FAKE_CUPTI_VERSION", "12", 1);
  ASSERT_EQ(api().cuptiGetVersion(&version), cupti::kSuccess);
  EXPECT_EQ(version, 12u);
  unsetenv("FAKE_CUPTI_VERSION");
}

TEST_F(FakeCupti, OneSubscriberAtATimeUnlessAProfilerHoldsIt) {
  const auto callback = [](void*, int, std::uint32_t, const void*) {};
  cupti::SubscriberHandle first = nullptr, second = nullptr;
  setenv("FAKE_CUPTI_HELD", "1", 1);
  EXPECT_EQ(api().cuptiSubscribe(&first, callback, nullptr), cupti::kErrorMultipleSubscribers);
  unsetenv("FAKE_CUPTI_HELD");
  ASSERT_EQ(api().cuptiSubscribe(&first, callback, nullptr), cupti::kSuccess);
  EXPECT_EQ(api().cuptiSubscribe(&second, callback, nullptr), cupti::kErrorMultipleSubscribers);
  ASSERT_EQ(api().cuptiUnsubscribe(first), cupti::kSuccess);
  ASSERT_EQ(api().cuptiSubscribe(&second, callback, nullptr), cupti::kSuccess);
  EXPECT_EQ(api().cuptiUnsubscribe(second), cupti::kSuccess);

  const char* text = nullptr;
  ASSERT_EQ(api().cuptiGetResultString(cupti::kErrorMultipleSubscribers, &text), cupti::kSuccess);
  EXPECT_STREQ(text, "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED");
}

}  // namespace
