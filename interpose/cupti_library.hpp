// CUPTI opened at run time for trace mode: the library named by GPUSHARE_CUPTI, else the first of
// the usual sonames the loader finds, checked to be recent enough and free (no other subscriber).
#pragma once

#include <string>
#include <type_traits>

#include "cupti_api.hpp"

namespace gpushare::interpose {

struct CuptiLibrary {
#define GPUSHARE_CUPTI_POINTER(name, type) std::add_pointer_t<type> name = nullptr;
  GPUSHARE_CUPTI_FUNCTIONS(GPUSHARE_CUPTI_POINTER)
#undef GPUSHARE_CUPTI_POINTER
  std::string path;     // as opened
  std::uint32_t version = 0;
  cupti::SubscriberHandle subscriber = nullptr;

  // CUPTI's text for a result ("CUPTI_ERROR_...", or the number).
  std::string describe(cupti::Result result) const;
};

struct CuptiOpened {
  bool ok = false;
  CuptiLibrary library;  // when ok: opened, version checked, subscribed
  std::string why_not;   // when not: one sentence for the log line and the trace's note
};

// Opens CUPTI (`configured`: GPUSHARE_CUPTI, empty for the default names) and subscribes, so that a
// profiler started later cannot take it over silently. Never throws.
CuptiOpened open_cupti(const std::string& configured);

}  // namespace gpushare::interpose
