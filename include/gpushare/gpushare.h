/* gpushare's C API: use gpushare from a program that links it instead of being started under
 * `gpushare run` (LD_PRELOAD). C++ programs use gpushare.hpp, a thin layer over this.
 *
 * The library that implements it is libgpushare-preload.so itself: linked into a program *ahead of
 * libcuda and libc* (CMake: list gpushare::gpushare before the CUDA driver library), its driver
 * entry points and its dlsym take precedence exactly as they would under LD_PRELOAD, so the
 * enforcement is the same. gpushare_join checks that precedence and says so when it does not hold.
 *
 * Every function returns GPUSHARE_OK or an error code; gpushare_last_error() then says why, in a
 * sentence. Nothing aborts. Thread-safe. */
#ifndef GPUSHARE_GPUSHARE_H
#define GPUSHARE_GPUSHARE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GPUSHARE_API_VERSION 1
/* A memory limit of "no quota". */
#define GPUSHARE_UNLIMITED UINT64_MAX

typedef enum gpushare_result {
  GPUSHARE_OK = 0,
  GPUSHARE_ERROR_INVALID_ARGUMENT = 1, /* a bad option value, or a null pointer */
  GPUSHARE_ERROR_ALREADY_STARTED = 2,  /* gpushare_join after the first CUDA call, or twice */
  GPUSHARE_ERROR_NOT_INTERPOSED = 3,   /* libcuda or libc comes before gpushare in the link order */
  GPUSHARE_ERROR_STATE = 4,            /* the shared state file cannot be used */
  GPUSHARE_ERROR_DEVICE = 5,           /* the device cannot be identified (cuInit not called?) */
  GPUSHARE_ERROR_NOT_JOINED = 6        /* gpushare is not enforcing in this process */
} gpushare_result;

typedef enum gpushare_priority {
  GPUSHARE_PRIORITY_UNSET = 0, /* the environment's, else normal */
  GPUSHARE_PRIORITY_LOW = 1,
  GPUSHARE_PRIORITY_NORMAL = 2,
  GPUSHARE_PRIORITY_HIGH = 3
} gpushare_priority;

/* What gpushare_join sets. A zero or null field leaves the matching GPUSHARE_* environment
 * variable (docs/configuration.md) in force, so operators can still configure a linked program.
 * A set field is checked exactly as that variable is.
 *
 * Versioning: struct_size is the size of the struct the *program* was compiled with. A library
 * reads only the fields that fit in it, so later versions can add fields at the end and programs
 * built against an older header keep working. gpushare_options_init (inline, below) sets it. */
typedef struct gpushare_options {
  uint32_t struct_size;          /* sizeof(gpushare_options) as the program sees it */
  const char* tenant;            /* GPUSHARE_TENANT: processes with one name share one quota */
  const char* state_path;        /* GPUSHARE_STATE */
  uint64_t memory_limit_bytes;   /* GPUSHARE_MEMORY_LIMIT, per GPU; GPUSHARE_UNLIMITED for none */
  uint32_t compute_share_pct;    /* GPUSHARE_COMPUTE_SHARE, 1-100 */
  uint32_t compute_limit_pct;    /* GPUSHARE_COMPUTE_LIMIT: a hard cap, 1-99; 100: no cap */
  gpushare_priority priority;    /* GPUSHARE_PRIORITY */
  uint32_t slice_ms;             /* GPUSHARE_SLICE_MS */
} gpushare_options;

/* This tenant on one device, as the ledger has it. Versioned like gpushare_options: the library
 * writes only the fields that fit in struct_size (gpushare_usage_init sets it). */
typedef struct gpushare_usage {
  uint32_t struct_size;          /* sizeof(gpushare_usage) as the program sees it */
  uint64_t memory_limit_bytes;   /* GPUSHARE_UNLIMITED when there is no quota */
  uint64_t memory_used_bytes;    /* by every process of the tenant */
  uint64_t memory_peak_bytes;
  uint64_t oom_refusals;         /* allocations refused by the quota */
  uint64_t device_total_bytes;   /* what cuDeviceTotalMem / cuMemGetInfo report to this program */
  uint64_t physical_bytes;       /* the card's real memory */
  double gpu_seconds;            /* GPU time charged (updated at each time-slice handover) */
  uint64_t launches;             /* gated launches, counted at each handover */
  double wait_seconds;           /* time spent waiting for a time slice */
} gpushare_usage;

/* Compiled into the program, so that the size is the program's own. */
static inline void gpushare_options_init(gpushare_options* options) {
  memset(options, 0, sizeof *options);
  options->struct_size = (uint32_t)sizeof *options;
}
static inline void gpushare_usage_init(gpushare_usage* usage) {
  memset(usage, 0, sizeof *usage);
  usage->struct_size = (uint32_t)sizeof *usage;
}

/* Joins the tenant and applies the options. Call it before the first CUDA call (the runtime and
 * frameworks read the quota as the device's size when they start). Opens the shared state and
 * claims this process's slot at once, so that problems are reported here rather than as failed
 * allocations later. */
gpushare_result gpushare_join(const gpushare_options* options);

/* This tenant's usage on `device` (a CUDA device ordinal). Needs gpushare_join (or, under
 * `gpushare run`, a first CUDA call) and cuInit. `usage` must have been set up by
 * gpushare_usage_init. */
gpushare_result gpushare_get_usage(int device, gpushare_usage* usage);

/* The tenant this process belongs to; "" before gpushare_join or the first CUDA call. */
const char* gpushare_tenant_name(void);

/* Why the last call on this thread failed; "" after a success. */
const char* gpushare_last_error(void);

const char* gpushare_version(void);

#ifdef __cplusplus
}
#endif

#endif /* GPUSHARE_GPUSHARE_H */
