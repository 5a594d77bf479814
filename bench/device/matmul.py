"""bf16 8192^3 matmuls back to back for SECONDS; prints the TFLOP/s this process got."""
import sys
import time

import torch

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
torch.cuda.synchronize()
iterations = 0
start = time.perf_counter()
while time.perf_counter() - start < seconds:
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    iterations += 10
elapsed = time.perf_counter() - start
print(f"iterations={iterations} tflops={2 * n**3 * iterations / elapsed / 1e12:.1f} seconds={elapsed:.2f}")
