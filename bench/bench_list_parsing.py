"""URL lists with broken lines: the download stage's parser vs pandas and Arrow told to skip them.

A user whose list has bad lines would otherwise reach for
``pandas.read_csv(on_bad_lines="skip")`` or Arrow's ``invalid_row_handler``
returning ``"skip"``: both drop the lines (so every later row moves, and keys
with it) and neither survives a byte that is not UTF-8. Ours keeps each bad
line as a null row in place. Same bytes, same run, each method in its own
process (peak memory is its resident-set growth), best of ``--repeats``,
interleaved. The clean file through Arrow's one-call fast path is the baseline.

    python bench/bench_list_parsing.py --lines 1000000 --bad 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def make_csv(lines: int, bad: int) -> tuple[bytes, bytes]:
    """(clean, broken) CSV lists; the broken one has ``bad`` lines with an extra field."""
    rows = [b"url,caption"] + [b"http://example.com/img/%d.jpg,caption number %d" % (i, i) for i in range(lines)]
    clean = b"\n".join(rows) + b"\n"
    step = max(1, lines // max(bad, 1))
    for i in range(1 + step // 2, lines + 1, step)[:bad]:  # not the first row: pandas would read an index
        rows[i] += b",extra"
    return clean, b"\n".join(rows) + b"\n"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def run_one(method: str, path: str) -> dict:
    """Child process: parse once, report seconds, rows and peak resident-set growth in MiB (Linux)."""
    import pyarrow as pa

    data = open(path, "rb").read()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident set
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    if method in ("ours", "ours_clean"):
        from curation.download.textlists import parse_text

        rows = parse_text(data, "csv", "url").table.num_rows
    elif method == "arrow_skip":
        import io

        import pyarrow.csv as pc

        options = pc.ParseOptions(invalid_row_handler=lambda row: "skip")
        rows = pc.read_csv(io.BytesIO(data), parse_options=options,
                           convert_options=pc.ConvertOptions(column_types={"url": pa.string(),
                                                                           "caption": pa.string()})).num_rows
    else:
        import io

        import pandas as pd

        rows = len(pd.read_csv(io.BytesIO(data), dtype=str, on_bad_lines="skip"))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "mib": (_status_kib("VmHWM") - base) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--bad", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(*args.child)))
        return
    clean, broken = make_csv(args.lines, args.bad)
    methods = {"ours_clean": clean, "ours": broken, "arrow_skip": broken, "pandas_skip": broken}
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in methods.items():
            paths[name] = os.path.join(tmp, f"{name}.csv")
            with open(paths[name], "wb") as f:
                f.write(data)
        for _ in range(args.repeats):
            for name in methods:
                out = subprocess.run([sys.executable, __file__, "--child", name, paths[name]], check=True,
                                     capture_output=True, text=True).stdout
                result = json.loads(out)
                if name not in best or result["seconds"] < best[name]["seconds"]:
                    best[name] = result
    print(f"{args.lines:,} lines ({len(broken) / 2**20:.0f} MiB), {args.bad} bad; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'method':<12} {'rows':>10} {'lines/s':>12} {'peak MiB':>9} {'time vs arrow_skip':>19}")
    for name, r in best.items():
        ratio = r["seconds"] / best["arrow_skip"]["seconds"]
        print(f"{name:<12} {r['rows']:>10,} {args.lines / r['seconds']:>12,.0f} {r['mib']:>9.0f} {ratio:>19.2f}")


if __name__ == "__main__":
    main()
