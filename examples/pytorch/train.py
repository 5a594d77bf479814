"""A small, real PyTorch training loop to run as a gpushare tenant.

    gpushare run --memory 8GiB --share 70 --tenant train -- python3 train.py

An MLP learns a fixed random "teacher" network from synthetic data, so the loss really falls and
the GPU does real matrix work. Every --log-every steps it prints the time per step and what the
program is told about memory: torch.cuda.mem_get_info() (under gpushare, total is the tenant's
quota and free is what is left of it) and torch.cuda.max_memory_allocated().

When the quota is too small for the model, PyTorch raises its ordinary torch.OutOfMemoryError, as it
would on a full card; this script reports it and exits with status 1 (try --width 16384 under
--memory 1GiB).
"""
import argparse
import os
import sys
import time

import torch

GIB = float(1 << 30)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (0: run until interrupted)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--width", type=int, default=4096, help="hidden width of the MLP")
    parser.add_argument("--depth", type=int, default=6, help="hidden layers")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("batch_size", "width", "depth", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps < 0:
        parser.error("--steps must be 0 or more")
    return args


def build_model(width: int, depth: int, features: int) -> torch.nn.Module:
    layers = [torch.nn.Linear(features, width), torch.nn.GELU()]
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(width, width), torch.nn.LayerNorm(width), torch.nn.GELU()]
    layers.append(torch.nn.Linear(width, features))
    return torch.nn.Sequential(*layers)


def memory_line() -> str:
    free, total = torch.cuda.mem_get_info()
    return (f"mem_get_info free={free / GIB:.2f}GiB total={total / GIB:.2f}GiB "
            f"max_allocated={torch.cuda.max_memory_allocated() / GIB:.2f}GiB")


def main() -> int:
    args = parse_args()
    # gpushare run names every tenant; tagging lines with it keeps two tenants' output apart.
    tag = f"[{os.environ.get('GPUSHARE_TENANT', 'train')}]"

    def say(text: str) -> None:
        print(f"{tag} {text}", flush=True)

    if not torch.cuda.is_available():
        say("no CUDA device visible to PyTorch")
        return 1
    device = torch.device("cuda")
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    props = torch.cuda.get_device_properties(device)
    # Under gpushare, total_memory is min(quota, card): libcudart caches cuDeviceTotalMem.
    say(f"device {props.name}: total_memory={props.total_memory / GIB:.2f}GiB {memory_line()}")

    # OutOfMemoryError is torch.cuda.OutOfMemoryError before PyTorch 2.1.
    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    features = 256
    step = 0
    try:
        model = build_model(args.width, args.depth, features).to(device)
        teacher = build_model(256, 2, features).to(device).requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        parameters = sum(p.numel() for p in model.parameters())
        say(f"model: {parameters / 1e6:.1f}M parameters, batch {args.batch_size}")

        window_start = time.perf_counter()
        window_steps = 0
        step_times = []
        while args.steps == 0 or step < args.steps:
            inputs = torch.randn(args.batch_size, features, device=device)
            with torch.no_grad():
                targets = teacher(inputs)
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            window_steps += 1
            if step % args.log_every == 0 or step == args.steps:
                # .item() waits for the GPU, so the window's wall time is the GPU's time per step
                # (including any time this tenant waited for its share of the GPU).
                value = loss.item()
                elapsed = time.perf_counter() - window_start
                step_ms = 1000.0 * elapsed / window_steps
                step_times.append(step_ms)
                say(f"step {step} loss={value:.4f} step_ms={step_ms:.2f} {memory_line()}")
                window_start = time.perf_counter()
                window_steps = 0
    except out_of_memory as error:
        # The quota (or the card) is too small for this model and batch: PyTorch has already
        # freed its cache and retried, as on a full GPU. Report where it happened and stop.
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        say(f"out of memory at step {step}: {first_line[:200]}")
        say(memory_line())
        return 1
    except KeyboardInterrupt:
        say(f"interrupted at step {step}")

    mean = sum(step_times) / len(step_times) if step_times else 0.0
    say(f"done steps={step} mean_step_ms={mean:.2f} "
        f"peak_allocated={torch.cuda.max_memory_allocated() / GIB:.2f}GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
