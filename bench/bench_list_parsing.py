"""URL lists with broken lines: the download stage's parser vs pandas and Arrow told to skip them.

A user whose list has bad lines would otherwise reach for
``pandas.read_csv(on_bad_lines="skip")`` or Arrow's ``invalid_row_handler``
returning ``"skip"``: both drop the lines (so every later row moves, and keys
with it) and neither survives a byte that is not UTF-8. Ours keeps each bad
line as a null row in place. JSON Lines has no such peer (pandas and Arrow
fail on the first bad line): there ours is compared with its own clean-file
path. Same bytes, same run, each method in its own process (peak memory is
its resident-set growth while parsing, Linux only), best of ``--repeats``,
interleaved.

    python bench/bench_list_parsing.py --format csv --lines 1000000 --bad 100 --repeats 3
    python bench/bench_list_parsing.py --format jsonl --lines 1000000 --bad 100 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time


def make_list(fmt: str, lines: int, bad: int) -> tuple[bytes, bytes]:
    """(clean, broken) lists; the broken one has ``bad`` lines with an extra CSV field or a missing brace."""
    if fmt == "csv":
        rows = [b"url,caption"] + [b"http://example.com/img/%d.jpg,caption number %d" % (i, i) for i in range(lines)]
    else:
        rows = [b""] + [
            b'{"url": "http://example.com/img/%d.jpg", "caption": "caption number %d"}' % (i, i) for i in range(lines)
        ]
    clean = b"\n".join(rows).lstrip(b"\n") + b"\n"
    step = max(1, lines // max(bad, 1))
    for i in range(1 + step // 2, lines + 1, step)[:bad]:  # not the first row: pandas would read an index
        rows[i] = rows[i] + b",extra" if fmt == "csv" else rows[i][:-1]
    return clean, b"\n".join(rows).lstrip(b"\n") + b"\n"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def parse(method: str, fmt: str, data: bytes) -> int:
    """Rows parsed by ``method``."""
    import pyarrow as pa

    if method.startswith("ours"):
        from curation.download.textlists import parse_text

        return parse_text(data, fmt, "url").table.num_rows
    if method == "arrow_skip":
        import pyarrow.csv as pc

        options = pc.ParseOptions(invalid_row_handler=lambda row: "skip")
        types = pc.ConvertOptions(column_types={"url": pa.string(), "caption": pa.string()})
        return pc.read_csv(io.BytesIO(data), parse_options=options, convert_options=types).num_rows
    import pandas as pd

    return len(pd.read_csv(io.BytesIO(data), dtype=str, on_bad_lines="skip"))


def run_one(method: str, fmt: str, path: str) -> dict:
    """Child process: parse once; seconds, rows and peak resident-set growth in MiB."""
    import pyarrow  # noqa: F401 (imported before the baseline, as for every method)

    with open(path, "rb") as f:
        data = f.read()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident set
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    rows = parse(method, fmt, data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "mib": (_status_kib("VmHWM") - base) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--bad", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(*args.child)))
        return
    clean, broken = make_list(args.format, args.lines, args.bad)
    methods = {"ours_clean": clean, "ours": broken}
    if args.format == "csv":
        methods.update(arrow_skip=broken, pandas_skip=broken)
    reference = "arrow_skip" if args.format == "csv" else "ours_clean"
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in methods.items():
            paths[name] = os.path.join(tmp, f"{name}.{args.format}")
            with open(paths[name], "wb") as f:
                f.write(data)
        for _ in range(args.repeats):
            for name in methods:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", name, args.format, paths[name]],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                result = json.loads(out)
                if name not in best or result["seconds"] < best[name]["seconds"]:
                    best[name] = result
    print(
        f"{args.format}: {args.lines:,} lines ({len(broken) / 2**20:.0f} MiB), {args.bad} bad; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"{'method':<12} {'rows':>10} {'lines/s':>12} {'peak MiB':>9} {'time vs ' + reference:>20}")
    for name, r in best.items():
        ratio = r["seconds"] / best[reference]["seconds"]
        print(f"{name:<12} {r['rows']:>10,} {args.lines / r['seconds']:>12,.0f} {r['mib']:>9.0f} {ratio:>20.2f}")


if __name__ == "__main__":
    main()
