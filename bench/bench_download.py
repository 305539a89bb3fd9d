"""Download stage vs img2dataset on the same loopback corpus, same machine, same run.

A fixed corpus of generated JPEGs (photographic crops of scikit-image and
scikit-learn sample photos, 300-3000 px long side, grain added, quality
75-95; deterministic from the seed) is served from memory by an aiohttp
server in its own process on 127.0.0.1. Both tools fetch the same URL list
with the same settings: resize so that the shorter side is at most 256 px
(never upscaled), JPEG quality 90, webdataset tars, the same shard size,
and the same budget of processes x concurrent requests. img2dataset runs
from its own virtual environment (``bench/.venv-img2dataset``, created on
first use). The download stage runs through the real runner on a local Ray
(``--backend local`` runs it in-process instead). Runs alternate between the
tools; the rate is successful images per second of wall time of the
download itself (Ray start-up and the corpus excluded for both).

    python bench/bench_download.py --n 2000 --workers 2 --concurrency 32 --repeats 2
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


# --- corpus -------------------------------------------------------------------------------------

def _photos() -> list[np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(),
              data.retina(), data.stereo_motorcycle()[0], data.immunohistochemistry()]
    return photos + list(load_sample_images().images)


def _make_image(args: tuple[int, int, str]) -> int:
    """One corpus JPEG: a random crop of a sample photo at a random size, with sensor-like grain."""
    index, seed, path = args
    from PIL import Image

    rng = np.random.default_rng([seed, index])
    photos, grain = _sources()
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
    ch = int(min(h, w / aspect) * rng.uniform(0.6, 1.0))
    cw = max(16, min(w, int(ch * aspect)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    long_side = int(rng.uniform(300, 3000))
    scale = long_side / max(cw, ch)
    size = (max(16, round(cw * scale)), max(16, round(ch * scale)))
    image = np.asarray(Image.fromarray(photo[y:y + ch, x:x + cw]).resize(size, Image.BILINEAR), np.int16)
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


def make_corpus(n: int, seed: int) -> Path:
    root = CACHE / f"corpus-{n}-{seed}"
    if (root / "done.json").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    jobs = [(i, seed, str(root / f"{i:06d}.jpg")) for i in range(n)]
    started = time.time()
    with multiprocessing.Pool(2) as pool:
        sizes = pool.map(_make_image, jobs, chunksize=16)
    (root / "done.json").write_text(json.dumps({"n": n, "seed": seed, "bytes": sum(sizes)}))
    print(f"corpus: {n} JPEGs, {sum(sizes) / 2**20:.0f} MiB, made in {time.time() - started:.0f} s", flush=True)
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
    pq.write_table(pa.table({"url": [f"{base}/img/{n}" for n in names],
                             "caption": [f"image {n[:-4]}" for n in names]}), path)
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
            "http": {"concurrency": args.concurrency, "per_host": args.concurrency, "retries": 0,
                     "total_timeout": 30},
            "image": {"resize": "shorter_side", "size": args.size, "jpeg_quality": args.quality},
            "exact_dedup": False,
            "worker": {"num_cpus": 1, "decode_threads": args.decode_threads},
        },
    }
    config = cfg.validate(data)
    if args.backend == "ray":
        from curation.runner.ray_backend import RayBackend, init_ray

        init_ray(config.ray)  # a running cluster: its start-up is not timed
        backend = RayBackend(config.runner)
    else:
        from curation.runner.local import LocalBackend

        backend = LocalBackend(0)
    started = time.perf_counter()
    report = run(config, backend, ["download"])
    seconds = time.perf_counter() - started
    if args.backend == "ray":
        import ray

        ray.shutdown()  # so that the other tool runs on a machine without an idle cluster
    counts = report.stages["download"]["counts"]
    from curation.stages.base import files_dir

    step = out / "stages/download/fetch"
    return {"seconds": seconds, "success": counts.get("success", 0), "counts": counts,
            "bytes": sum(p.stat().st_size for p in files_dir(step).glob("*.tar")), "megapixels": _megapixels(step)}


def _megapixels(folder: Path) -> float:
    """Stored pixels of the successes of a folder of Parquet tables (both tools write width, height)."""
    import pyarrow.parquet as pq

    total = 0
    for path in folder.glob("*.parquet"):
        table = pq.read_table(path, columns=["status", "width", "height"]).to_pylist()
        total += sum(r["width"] * r["height"] for r in table if r["status"] == "success")
    return total / 1e6


I2D_SCRIPT = """
import json, sys, time
from img2dataset import download
args = json.loads(sys.argv[1])
started = time.perf_counter()
download(**args)
print("RESULT", json.dumps({"seconds": time.perf_counter() - started}))
"""


def ensure_img2dataset() -> Path:
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import img2dataset"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return python


def run_img2dataset(python: Path, url_list: Path, out: Path, args) -> dict:
    options = {
        "url_list": str(url_list), "input_format": "parquet", "url_col": "url", "caption_col": "caption",
        "output_format": "webdataset", "output_folder": str(out), "processes_count": args.workers,
        "thread_count": args.concurrency, "image_size": args.size, "resize_mode": "keep_ratio",
        "resize_only_if_bigger": True, "encode_quality": args.quality, "encode_format": "jpg",
        "number_sample_per_shard": args.shard_size, "distributor": "multiprocessing", "retries": 0,
        "timeout": 30, "enable_wandb": False, "compute_hash": "sha256",
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(python), "-c", I2D_SCRIPT, json.dumps(options)], capture_output=True, text=True,
                          env=env, cwd=str(out.parent))
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"img2dataset failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    return {"seconds": json.loads(line[7:])["seconds"], "success": sum(s["successes"] for s in stats),
            "counts": {"success": sum(s["successes"] for s in stats),
                       "failed_to_download": sum(s["failed_to_download"] for s in stats),
                       "failed_to_resize": sum(s["failed_to_resize"] for s in stats)},
            "bytes": sum(p.stat().st_size for p in out.glob("*.tar")), "megapixels": _megapixels(out)}


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
    parser.add_argument("--n", type=int, default=2000, help="corpus size (JPEGs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (img2dataset) = actors (curation)")
    parser.add_argument("--concurrency", type=int, default=32, help="threads (img2dataset) = requests per actor")
    parser.add_argument("--decode-threads", type=int, default=1, help="decode threads per curation actor")
    parser.add_argument("--size", type=int, default=256, help="shorter side bound in pixels")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--shard-size", type=int, default=250, help="samples per shard = partition size")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each tool")
    parser.add_argument("--backend", choices=["ray", "local"], default="ray")
    parser.add_argument("--skip-img2dataset", action="store_true")
    parser.add_argument("--compare-clients", action="store_true",
                        help="also time fetching alone with aiohttp vs a thread pool (one process)")
    args = parser.parse_args()

    corpus = make_corpus(args.n, args.seed)
    python = None if args.skip_img2dataset else ensure_img2dataset()
    server, base = start_server(corpus)
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        url_list = work / "urls.parquet"
        count = write_list(corpus, base, url_list)
        if args.compare_clients:
            import pyarrow.parquet as pq

            urls = pq.read_table(url_list).column("url").to_pylist()
            for name, rate in compare_clients(urls, args.concurrency).items():
                print(f"fetch only, {name}: {rate:.0f} responses/s", flush=True)
        results: dict[str, list[dict]] = {"curation": [], "img2dataset": []}
        for repeat in range(args.repeats):
            out = work / f"curation-{repeat}"
            results["curation"].append(run_curation(url_list, out, args))
            print(f"curation    run {repeat}: {_line(results['curation'][-1])}", flush=True)
            if python is not None:
                out = work / f"img2dataset-{repeat}"
                out.mkdir()
                results["img2dataset"].append(run_img2dataset(python, url_list, out, args))
                print(f"img2dataset run {repeat}: {_line(results['img2dataset'][-1])}", flush=True)
        _summary(results, count, args)
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)


def _line(result: dict) -> str:
    return (f"{result['success']} images in {result['seconds']:.1f} s = {result['success'] / result['seconds']:.1f} "
            f"img/s, {result['megapixels']:.1f} stored Mpx, {result['bytes'] / 2**20:.1f} MiB of tars, "
            f"{result['counts']}")


def _summary(results: dict[str, list[dict]], count: int, args) -> None:
    rates = {tool: statistics.median(r["success"] / r["seconds"] for r in runs)
             for tool, runs in results.items() if runs}
    where = "Ray (local cluster)" if args.backend == "ray" else "in-process runner"
    print(f"\n{count} URLs, {args.workers} workers x {args.concurrency} requests, shorter side <= {args.size}, "
          f"q{args.quality}, curation on {where}, {os.cpu_count()} CPUs")
    for tool, rate in rates.items():
        print(f"  {tool:12s} {rate:8.1f} img/s (median of {len(results[tool])})")
    if len(rates) == 2:
        print(f"  ratio curation / img2dataset: {rates['curation'] / rates['img2dataset']:.2f}x")


if __name__ == "__main__":
    main()
