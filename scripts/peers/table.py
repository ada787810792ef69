"""The Markdown table of scripts/bench-peers, from the loadgen outputs it collected.

    python3 table.py RESULTS_DIR "RATES"

RESULTS_DIR holds one folder per path, in the order measured: `name` (the path's label), `note`
(why it was not measured, if so) and `RATE.RUN.txt`, the output of one `verdict-loadgen --url`
run. For each rate it takes the medians over the runs of p50, p99 and each process's CPU time
per call (processes watched as `NAME.N`, e.g. the workers of one server, are added up as NAME).
A rate counts as sustained when no call failed and the median p99 is under 50 ms.
"""

import statistics
import sys
from pathlib import Path

SUSTAINED_P99_US = 50_000


def parse(text):
    """(calls, errors, p50 µs, p99 µs, {process: CPU µs per call}, first error) of one run."""
    latency = None
    cpu = {}
    first_error = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("first error:"):
            first_error = first_error or line[len("first error:"):].strip()
        elif len(cells) == 8 and cells[1].isdigit():
            calls, errors, _rate, p50, _p90, p99, _max = map(float, cells[1:])
            latency = (int(calls), int(errors), p50, p99)
        elif len(cells) == 3 and cells[2].isdigit():
            process = cells[1].split(".")[0]
            cpu[process] = cpu.get(process, 0) + int(cells[2])
    if latency is None:
        return None
    return (*latency, cpu, first_error)


def ms(us):
    return f"{us / 1000:.2f}" if us < 10_000 else f"{us / 1000:.0f}"


def row(folder, rates):
    name = (folder / "name").read_text().strip()
    note = folder / "note"
    if note.exists():
        return [name, f"not measured: {note.read_text().strip()}"] + ["—"] * (len(rates) + 1)
    cells, sustained, cpu_at = [], None, None
    for rate in rates:
        runs = [parse(p.read_text()) for p in sorted(folder.glob(f"{rate}.*.txt"))]
        runs = [r for r in runs if r]
        if not runs:
            cells.append("—")
            continue
        calls = sum(r[0] for r in runs)
        errors = sum(r[1] for r in runs)
        p50 = statistics.median(r[2] for r in runs)
        p99 = statistics.median(r[3] for r in runs)
        processes = sorted({p for r in runs for p in r[4]})
        cpu = {p: statistics.median(r[4].get(p, 0) for r in runs) for p in processes}
        cell = f"{ms(p50)} / {ms(p99)}"
        if errors:
            error = next((r[5] for r in runs if r[5]), "")
            cell += f" ({errors} of {calls} calls failed: {error[:80]})"
        cells.append(cell)
        if errors == 0 and p99 < SUSTAINED_P99_US:
            sustained = rate
        if cpu_at is None or errors == 0 and p99 < SUSTAINED_P99_US:
            cpu_at = (rate, cpu)
    cpu_cell = "—"
    if cpu_at:
        rate, cpu = cpu_at
        cpu_cell = ", ".join(f"{p} {v:.0f}" for p, v in cpu.items()) + f" (at {rate}/s)"
    best = f"{sustained}/s" if sustained else f"none of {', '.join(rates)}/s"
    return [name, cpu_cell] + cells + [best]


def main():
    results, rates = Path(sys.argv[1]), sys.argv[2].split()
    header = ["path", "CPU µs per tools/call (each process)"]
    header += [f"p50 / p99 ms at {r}/s" for r in rates] + ["highest rate with p99 < 50 ms"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for folder in sorted(p for p in results.iterdir() if p.is_dir()):
        print("| " + " | ".join(row(folder, rates)) + " |")


if __name__ == "__main__":
    main()
