"""Allocate until PyTorch raises OutOfMemoryError; report where it stopped and what it was told.

Run under `gpushare run --memory 8GiB` with PYTORCH_CUDA_ALLOC_CONF set to the allocator to test.
Prints one JSON object.
"""
import json
import os
import sys
import time

import torch

CHUNK = int(sys.argv[1]) if len(sys.argv) > 1 else 256 << 20


def main() -> None:
    torch.cuda.init()
    props = torch.cuda.get_device_properties(0)
    free0, total0 = torch.cuda.mem_get_info()
    blocks = []
    error = None
    started = time.perf_counter()
    try:
        while True:
            blocks.append(torch.empty(CHUNK, dtype=torch.uint8, device="cuda"))
    except torch.OutOfMemoryError as exc:  # the recoverable error, as from a real full GPU
        error = type(exc).__name__ + ": " + str(exc).splitlines()[0][:160]
    except Exception as exc:  # anything else is a failure of gpushare
        error = "UNEXPECTED " + type(exc).__name__ + ": " + str(exc)[:300]
    seconds = time.perf_counter() - started
    free1, total1 = torch.cuda.mem_get_info()
    allocated = torch.cuda.memory_allocated()
    reserved = torch.cuda.memory_reserved()
    del blocks
    torch.cuda.empty_cache()
    free2, _ = torch.cuda.mem_get_info()
    # The program keeps working after the OOM: one more allocation after freeing.
    after = torch.ones(1 << 20, device="cuda").sum().item()
    print(json.dumps({
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"),
        "chunk_bytes": CHUNK,
        "device_total_memory": props.total_memory,
        "mem_get_info_start": [free0, total0],
        "stopped_at_allocated": allocated,
        "reserved_at_stop": reserved,
        "mem_get_info_at_stop": [free1, total1],
        "mem_get_info_after_free": [free2, total1],
        "error": error,
        "works_after_oom": after == float(1 << 20),
        "fill_seconds": round(seconds, 3),
    }))


if __name__ == "__main__":
    main()
