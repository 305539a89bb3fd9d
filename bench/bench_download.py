"""Download stage vs img2dataset on the same loopback corpora, same machine, same run.

Two generated corpora (photographic crops of scikit-image and scikit-learn
sample photos with sensor-like grain, JPEG quality 75-95, deterministic from
the seed): ``web``, 300-3000 px on the long side, and ``camera``, phone and
camera photos of 3000-4500 px (4:3, 3:2 or 16:9, either orientation). Each is
served from memory by an aiohttp server in its own process on 127.0.0.1.
Both tools fetch the same URL list with the same settings: resize so that
the shorter side is at most ``--sizes`` px (never upscaled), JPEG quality 90,
webdataset tars, the same shard size, and the same budget of processes x
concurrent requests. img2dataset runs from its own virtual environment
(``bench/.venv-img2dataset``, created on first use, or ``--img2dataset-python``).
The download stage runs through the real runner on a local Ray with its
default worker settings (decode threads from the worker's CPUs); ``--backend
local`` runs it in-process instead.

Per corpus and size, runs alternate between the tools (who goes first swaps
each repeat). For each run: successful images per second of wall time of the
download itself (Ray start-up and the corpus excluded for both), the share of
the machine's CPU that was busy (``/proc/stat``, everything the machine ran)
and the share used by the tool's own processes (CPU time / wall time / CPUs).

    python bench/bench_download.py --styles web,camera --sizes 512,256 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-img2dataset"
CACHE = HERE / ".cache" / "download"
# Long-side range in pixels, and the aspect ratios (long / short) drawn from; None: any in [1, 2].
STYLES = {"web": ((300, 3000), None), "camera": ((3000, 4500), (4 / 3, 3 / 2, 16 / 9))}


# --- corpus -------------------------------------------------------------------------------------


def _photos() -> list[np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.hubble_deep_field(),
        data.retina(),
        data.stereo_motorcycle()[0],
        data.immunohistochemistry(),
    ]
    return photos + list(load_sample_images().images)


def _make_image(args: tuple[int, int, str, str]) -> int:
    """One corpus JPEG: a random crop of a sample photo at a random size, with sensor-like grain."""
    index, seed, path, style = args
    from PIL import Image

    (low, high), aspects = STYLES[style]
    rng = np.random.default_rng([seed, index])
    photos, grain = _sources()
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    if aspects is None:
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
    else:
        aspect = float(aspects[rng.integers(len(aspects))]) ** (1 if rng.random() < 0.7 else -1)
    ch = int(min(h, w / aspect) * rng.uniform(0.6, 1.0))
    cw = max(16, min(w, int(ch * aspect)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    long_side = int(rng.uniform(low, high))
    scale = long_side / max(cw, ch)
    size = (max(16, round(cw * scale)), max(16, round(ch * scale)))
    image = np.asarray(Image.fromarray(photo[y : y + ch, x : x + cw]).resize(size, Image.BILINEAR), np.int16)
    # Upscaled photos are smoother than real ones (and so decode faster): add grain from a
    # pre-drawn tile, shifted per image, to bring the entropy back to a camera's.
    reps = (-(-size[1] // grain.shape[0]), -(-size[0] // grain.shape[1]), 1)
    shift = rng.integers(0, grain.shape[0], 2)
    noise = np.roll(np.tile(grain, reps), tuple(shift), axis=(0, 1))[: size[1], : size[0]]
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, "JPEG", quality=int(rng.integers(75, 96)))
    return os.path.getsize(path)


_SOURCES: tuple[list[np.ndarray], np.ndarray] | None = None


def _sources() -> tuple[list[np.ndarray], np.ndarray]:
    """The sample photos and a 509x509 grain tile (sigma 4), made once per process."""
    global _SOURCES
    if _SOURCES is None:
        grain = np.random.default_rng(12345).normal(0, 4, (509, 509, 3)).round().astype(np.int16)
        _SOURCES = (_photos(), grain)
    return _SOURCES


def make_corpus(n: int, seed: int, style: str = "web") -> Path:
    root = CACHE / (f"corpus-{n}-{seed}" if style == "web" else f"corpus-{style}-{n}-{seed}")
    if (root / "done.json").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    jobs = [(i, seed, str(root / f"{i:06d}.jpg"), style) for i in range(n)]
    started = time.time()
    with multiprocessing.Pool(2) as pool:
        sizes = pool.map(_make_image, jobs, chunksize=4)
    (root / "done.json").write_text(json.dumps({"n": n, "seed": seed, "style": style, "bytes": sum(sizes)}))
    print(f"corpus {style}: {n} JPEGs, {sum(sizes) / 2**20:.0f} MiB, made in {time.time() - started:.0f} s", flush=True)
    return root


# --- server ---------------------------------------------------------------------------------------


def _serve(root: str, port: int) -> None:
    from aiohttp import web

    files = {p.name: p.read_bytes() for p in Path(root).glob("*.jpg")}

    async def handle(request):
        body = files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/img/{name}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=2048)


def start_server(root: Path) -> tuple[multiprocessing.Process, str]:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(str(root), port), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{port}"
    first = sorted(root.glob("*.jpg"))[0].name
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{base}/img/{first}", timeout=1).read()
            return proc, base
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the corpus server did not start")


def write_list(root: Path, base: str, path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted(p.name for p in root.glob("*.jpg"))
    pq.write_table(
        pa.table({"url": [f"{base}/img/{n}" for n in names], "caption": [f"image {n[:-4]}" for n in names]}), path
    )
    return len(names)


# --- the two tools --------------------------------------------------------------------------------


def run_curation(url_list: Path, out: Path, args) -> dict:
    from curation import config as cfg
    from curation.runner.driver import run

    data = {
        "name": "bench-download",
        "run_dir": str(out),
        "stages": ["download"],
        "ray": {"num_cpus": args.workers, "dashboard": False},
        "runner": {"max_workers": args.workers, "progress": False, "max_partition_retries": 0},
        "download": {
            "input": {"paths": [str(url_list)], "partition_size": args.shard_size},
            "urls": {"allowed_addresses": ["127.0.0.1"]},
            "http": {"concurrency": args.concurrency, "per_host": args.concurrency, "retries": 0, "total_timeout": 30},
            "image": {"resize": "shorter_side", "size": args.size, "jpeg_quality": args.quality},
            "exact_dedup": False,
            "worker": {"num_cpus": 1},
        },
    }
    if args.decode_threads:  # else the stage's default: from the worker's CPUs
        data["download"]["worker"]["decode_threads"] = args.decode_threads
    config = cfg.validate(data)
    if args.backend == "ray":
        from curation.runner.ray_backend import RayBackend
        from curation.runner.ray_init import init_ray

        os.environ.setdefault("RAY_ADDRESS", "local")  # a cluster of its own, not one found running
        init_ray(config.ray)  # a running cluster: its start-up is not timed
        backend = RayBackend(config.runner)
    else:
        from curation.runner.local import LocalBackend

        backend = LocalBackend(0)
    from cpushare import CpuMeter

    with CpuMeter(exclude={args.server_pid}) as meter:
        report = run(config, backend, ["download"])
    if args.backend == "ray":
        import ray

        ray.shutdown()  # so that the other tool runs on a machine without an idle cluster
    counts = report.stages["download"]["counts"]
    from curation.stages.base import files_dir

    step = out / "stages/download/fetch"
    return {
        "seconds": meter.seconds,
        "machine": meter.machine,
        "tool": meter.tool,
        "success": counts.get("success", 0),
        "counts": counts,
        "bytes": sum(p.stat().st_size for p in files_dir(step).glob("*.tar")),
        "megapixels": _megapixels(step),
    }


def _megapixels(folder: Path) -> float:
    """Stored pixels of the successes of a folder of Parquet tables (both tools write width, height)."""
    import pyarrow.parquet as pq

    total = 0
    for path in folder.glob("*.parquet"):
        table = pq.read_table(path, columns=["status", "width", "height"]).to_pylist()
        total += sum(r["width"] * r["height"] for r in table if r["status"] == "success")
    return total / 1e6


# Measured inside img2dataset's own process, around the same call as the stage's.
I2D_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
from cpushare import CpuMeter
from img2dataset import download
args = json.loads(sys.argv[1])
with CpuMeter() as meter:
    download(**args)
print("RESULT", json.dumps({"seconds": meter.seconds, "machine": meter.machine, "tool": meter.tool}))
"""


def ensure_img2dataset(python: Path | None) -> Path:
    if python is not None:
        return python
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import img2dataset"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "img2dataset==1.47.0"], check=True)
    return python


def run_img2dataset(python: Path, url_list: Path, out: Path, args) -> dict:
    options = {
        "url_list": str(url_list),
        "input_format": "parquet",
        "url_col": "url",
        "caption_col": "caption",
        "output_format": "webdataset",
        "output_folder": str(out),
        "processes_count": args.workers,
        "thread_count": args.concurrency,
        "image_size": args.size,
        "resize_mode": "keep_ratio",
        "resize_only_if_bigger": True,
        "encode_quality": args.quality,
        "encode_format": "jpg",
        "number_sample_per_shard": args.shard_size,
        "distributor": "multiprocessing",
        "retries": 0,
        "timeout": 30,
        "enable_wandb": False,
        "compute_hash": "sha256",
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(python), "-c", I2D_SCRIPT, json.dumps(options), str(HERE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(out.parent),
    )
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"img2dataset failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    return {
        **json.loads(line[7:]),
        "success": sum(s["successes"] for s in stats),
        "counts": {
            "success": sum(s["successes"] for s in stats),
            "failed_to_download": sum(s["failed_to_download"] for s in stats),
            "failed_to_resize": sum(s["failed_to_resize"] for s in stats),
        },
        "bytes": sum(p.stat().st_size for p in out.glob("*.tar")),
        "megapixels": _megapixels(out),
    }


def compare_clients(urls: list[str], concurrency: int) -> dict[str, float]:
    """Fetch-only rates (responses/s, one process): asyncio + aiohttp vs a thread pool + urllib3."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import aiohttp
    import urllib3

    async def with_aiohttp() -> int:
        sem = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def one(url):
                async with sem, session.get(url) as resp:
                    return len(await resp.read())

            return sum(await asyncio.gather(*(one(u) for u in urls)))

    def with_threads() -> int:
        pool = urllib3.PoolManager(maxsize=concurrency)
        with ThreadPoolExecutor(concurrency) as executor:
            return sum(executor.map(lambda u: len(pool.request("GET", u).data), urls))

    rates = {}
    for name, run in (("asyncio+aiohttp", lambda: asyncio.run(with_aiohttp())), ("threads+urllib3", with_threads)):
        started = time.perf_counter()
        run()
        rates[name] = len(urls) / (time.perf_counter() - started)
    return rates


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", default="web,camera", help="corpora: web (300-3000 px), camera (3000-4500 px)")
    parser.add_argument("--n-web", type=int, default=1000, help="web corpus size (JPEGs)")
    parser.add_argument("--n-camera", type=int, default=150, help="camera corpus size (JPEGs)")
    parser.add_argument("--sizes", default="512,256", help="shorter-side bounds in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (img2dataset) = actors (curation)")
    parser.add_argument("--concurrency", type=int, default=32, help="threads (img2dataset) = requests per actor")
    parser.add_argument("--decode-threads", type=int, default=0, help="decode threads per actor (0: default)")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--shard-size", type=int, default=250, help="samples per shard = partition size")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each tool per setting")
    parser.add_argument("--backend", choices=["ray", "local"], default="ray")
    parser.add_argument("--skip-img2dataset", action="store_true")
    parser.add_argument("--img2dataset-python", type=Path, help="python of a venv with img2dataset 1.47")
    parser.add_argument(
        "--compare-clients",
        action="store_true",
        help="also time fetching alone with aiohttp vs a thread pool (one process)",
    )
    args = parser.parse_args()

    python = None if args.skip_img2dataset else ensure_img2dataset(args.img2dataset_python)
    rows = []
    for style in args.styles.split(","):
        corpus = make_corpus(args.n_web if style == "web" else args.n_camera, args.seed, style)
        rows += bench_corpus(style, corpus, python, args)
    _summary(rows, args)


def bench_corpus(style: str, corpus: Path, python: Path | None, args) -> list[dict]:
    """Every size on one corpus, tools alternating; one summary row per size."""
    server, base = start_server(corpus)
    args.server_pid = server.pid
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    rows = []
    try:
        url_list = work / "urls.parquet"
        count = write_list(corpus, base, url_list)
        if args.compare_clients:
            import pyarrow.parquet as pq

            urls = pq.read_table(url_list).column("url").to_pylist()
            for name, rate in compare_clients(urls, args.concurrency).items():
                print(f"fetch only, {name}: {rate:.0f} responses/s", flush=True)
        for size in (int(s) for s in args.sizes.split(",")):
            args.size = size
            load = os.getloadavg()[0]
            runs: dict[str, list[dict]] = {"curation": [], "img2dataset": []}
            for repeat in range(args.repeats):
                tools = ["curation"] + (["img2dataset"] if python is not None else [])
                for tool in tools if repeat % 2 == 0 else tools[::-1]:
                    out = work / f"{tool}-{size}-{repeat}"
                    out.mkdir()
                    result = (
                        run_curation(url_list, out, args)
                        if tool == "curation"
                        else run_img2dataset(python, url_list, out, args)
                    )
                    shutil.rmtree(out, ignore_errors=True)
                    runs[tool].append(result)
                    print(f"{style} {size}px {tool:11s} run {repeat}: {_line(result)}", flush=True)
            rows.append(_row(style, size, count, runs, (load, os.getloadavg()[0])))
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _cpu_ms(result: dict) -> float:
    """CPU time of the tool's processes per stored image, in ms: what the load of others moves least."""
    return 1000 * result["tool"] * result["seconds"] * os.cpu_count() / max(result["success"], 1)


def _line(result: dict) -> str:
    return (
        f"{result['success']} images in {result['seconds']:.1f} s = {result['success'] / result['seconds']:.1f} "
        f"img/s, CPU busy: machine {result['machine']:.0%}, tool {result['tool']:.0%} "
        f"({_cpu_ms(result):.1f} ms of CPU per image); "
        f"{result['megapixels']:.1f} stored Mpx, {result['bytes'] / 2**20:.1f} MiB of tars, {result['counts']}"
    )


def _row(style: str, size: int, count: int, runs: dict[str, list[dict]], load: tuple[float, float]) -> dict:
    row = {
        "style": style,
        "size": size,
        "urls": count,
        "load_before": round(load[0], 1),
        "load_after": round(load[1], 1),
    }
    for tool, results in runs.items():
        if results:
            row[tool] = {
                "img_s": statistics.median(r["success"] / r["seconds"] for r in results),
                "machine": statistics.median(r["machine"] for r in results),
                "tool": statistics.median(r["tool"] for r in results),
                "cpu_ms": statistics.median(_cpu_ms(r) for r in results),
                "runs": len(results),
            }
    if "curation" in row and "img2dataset" in row:
        row["ratio"] = row["curation"]["img_s"] / row["img2dataset"]["img_s"]
    return row


def _summary(rows: list[dict], args) -> None:
    where = "Ray (local cluster)" if args.backend == "ray" else "in-process runner"
    print(
        f"\n{args.workers} workers x {args.concurrency} requests, q{args.quality}, curation on {where}, "
        f"{os.cpu_count()} CPUs; medians; busy = machine (/proc/stat) / the tool's own processes; "
        "ms/img = the tool's CPU time per image"
    )
    print(
        f"{'corpus':8s} {'size':>5s} | {'curation img/s':>14s} {'busy':>9s} {'ms/img':>6s} | "
        f"{'img2dataset img/s':>17s} {'busy':>9s} {'ms/img':>6s} | {'ratio':>6s} {'load avg':>10s}"
    )
    for row in rows:
        cells = []
        for tool, width in (("curation", 14), ("img2dataset", 17)):
            r = row.get(tool)
            cells.append(
                f"{r['img_s']:{width}.1f} {r['machine']:4.0%}/{r['tool']:4.0%} {r['cpu_ms']:6.1f} |"
                if r
                else f"{'-':>{width}s} {'':16s} |"
            )
        ratio = f"{row['ratio']:5.2f}x" if "ratio" in row else "     -"
        print(
            f"{row['style']:8s} {row['size']:5d} | {cells[0]} {cells[1]} {ratio} "
            f"{row['load_before']:4.1f}-{row['load_after']:4.1f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
