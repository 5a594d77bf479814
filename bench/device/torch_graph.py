"""CUDA graph capture under gpushare, as PyTorch does it (torch.cuda.graph, global capture mode).

Captures ROUNDS graphs of 200 small kernels each (more than the gate's checkpoint interval, so the
gate's slow path runs during capture), replays each and compares with the same work done eagerly.
Prints captures=<n> failed=<n> mismatched=<n> replay_ms=<median>.
"""
import statistics
import sys
import time

import torch

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
x = torch.randn(256, 256, device="cuda")
w = torch.randn(256, 256, device="cuda") / 16


def work(t):
    for _ in range(100):
        t = torch.tanh(t @ w)  # two kernels per step
    return t


side = torch.cuda.Stream()  # warm up on a side stream, as torch.cuda.graph's documentation asks
side.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(side):
    work(x)
torch.cuda.current_stream().wait_stream(side)
torch.cuda.synchronize()

failed = mismatched = 0
replays = []
for _ in range(rounds):
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = work(x)
    except RuntimeError as error:  # an invalidated capture surfaces here
        failed += 1
        print(f"capture failed: {error}", file=sys.stderr)
        continue
    start = time.perf_counter()
    graph.replay()
    torch.cuda.synchronize()
    replays.append((time.perf_counter() - start) * 1e3)
    if not torch.allclose(out, work(x), rtol=1e-3, atol=1e-3):
        mismatched += 1
print(f"captures={rounds} failed={failed} mismatched={mismatched} "
      f"replay_ms={statistics.median(replays) if replays else float('nan'):.2f}")
