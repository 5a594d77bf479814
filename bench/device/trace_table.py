"""Prints the device bench's trace runs: each tenant's host-side figure beside the GPU-timestamp ones.

    trace_table.py ROWS

ROWS is tab-separated, one line per tenant of a run: RUN, SUMMARY (the `gpushare trace summary
--json` file of the run's trace folder; missing when the run left no summary), TENANT, HOST (the
figure the program itself printed). Tenants the summary holds and ROWS does not are shown too.
Standard library only (the device machine has no registry).
"""
import json
import sys


def seconds_or_ms(ns):
    if ns is None:
        return "-"
    return f"{ns / 1e9:.2f} s" if ns >= 1e9 else f"{ns / 1e6:.2f} ms"


def latency(ns):
    if ns is None:
        return "-"
    return f"{ns / 1e3:.1f}us" if ns < 1e7 else f"{ns / 1e6:.1f}ms"


def percent(part, whole):
    return "-" if not whole or part is None else f"{100.0 * part / whole:.1f}"


def load(path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def read_rows(path):
    runs = {}  # run -> (summary path, [(tenant, host)]), in the file's order
    with open(path, encoding="utf-8") as file:
        for line in file:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                continue
            run, summary, tenant, host = fields
            runs.setdefault(run, (summary, []))[1].append((tenant, host))
    return runs


HOST_WIDTH = 42
HEADER = (f"{'RUN':<12} {'TENANT':<8} {'HOST (the program)':<{HOST_WIDTH}} {'KERNELS':>8} {'BUSY':>10} "
          f"{'SHARE%':>7} {'BUSY/WALL%':>10} {'P50':>9} {'P99':>9} {'REQS':>6}")


def tenant_line(run, tenant, host, figures):
    if figures is None:
        return f"{run:<12} {tenant:<8} {host:<{HOST_WIDTH}} {'(not in the trace)':>8}"
    requests = figures.get("requests") or {}
    return (f"{run:<12} {tenant:<8} {host:<{HOST_WIDTH}} {figures.get('kernels', 0):>8} "
            f"{seconds_or_ms(figures.get('busy_ns')):>10} "
            f"{figures.get('share_percent', 0.0):>7.1f} "
            f"{percent(figures.get('busy_ns'), figures.get('wall_ns')):>10} "
            f"{latency(requests.get('p50_ns')):>9} {latency(requests.get('p99_ns')):>9} "
            f"{requests.get('count', '-'):>6}")


def gpu_line(gpu):
    idle = gpu.get("idle_at_handovers") or {}
    return (f"{'':<12} GPU {gpu.get('id')}: busy {seconds_or_ms(gpu.get('busy_ns'))} of "
            f"{seconds_or_ms(gpu.get('wall_ns'))} wall = {percent(gpu.get('busy_ns'), gpu.get('wall_ns'))} %; "
            f"idle at handovers {seconds_or_ms(idle.get('total_ns', 0))} in {idle.get('count', 0)} gaps "
            f"(longest {seconds_or_ms(idle.get('longest_ns', 0))})")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: trace_table.py ROWS")
    print(HEADER)
    for run, (summary_path, tenants) in read_rows(sys.argv[1]).items():
        summary = load(summary_path)
        gpus = (summary or {}).get("gpus") or []
        if not gpus:
            for tenant, host in tenants:
                print(f"{run:<12} {tenant:<8} {host:<{HOST_WIDTH}} no trace summary")
            continue
        for gpu in gpus:
            by_name = {t.get("tenant"): t for t in gpu.get("tenants") or []}
            for tenant, host in tenants:
                print(tenant_line(run, tenant, host, by_name.pop(tenant, None)))
            for name, figures in sorted(by_name.items(), key=lambda item: str(item[0])):
                print(tenant_line(run, str(name), "-", figures))
            print(gpu_line(gpu))


if __name__ == "__main__":
    main()
