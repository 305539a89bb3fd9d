import ipaddress
import threading
import time

from curation.download.config import HttpConfig
from curation.download.pipeline import Pipeline, Threads
from curation.download.urls import UrlPolicy
from curation.models.inference import decode_thread_count

LOCAL = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
HTTP = HttpConfig(concurrency=4, total_timeout=5, retries=0)


def _requests(server, tag):
    return sum(tag in p for p in server.paths)


def _wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_results_in_order_within_the_window(server):
    urls = [server.url(f"file/astronaut.jpg?tag=window-{i}") for i in range(12)]
    urls[3] = None  # not submitted (refused earlier)
    with Pipeline(HTTP, LOCAL, len, urls, window=4) as pipeline:
        assert _wait_for(lambda: _requests(server, "window-") == 4)
        time.sleep(0.2)
        assert _requests(server, "window-") == 4  # nothing beyond the window until results are taken
        sizes = [pipeline.result(i).image for i in range(12) if urls[i]]
    assert sizes == [len(server.files["astronaut.jpg"][0])] * 11


def test_undecoded_bytes_pause_fetching(server):
    gate = threading.Event()

    def slow(data):
        gate.wait(5)
        return len(data)

    urls = [server.url(f"file/astronaut.jpg?tag=budget-{i}") for i in range(8)]
    body = len(server.files["astronaut.jpg"][0])
    with Pipeline(HTTP, LOCAL, slow, urls, window=8, pending_bytes=body) as pipeline:
        # The first wave of fetches fills the budget while the decoder is blocked: no more start.
        assert _wait_for(lambda: _requests(server, "budget-") == HTTP.concurrency)
        time.sleep(0.3)
        assert _requests(server, "budget-") == HTTP.concurrency
        gate.set()
        assert [pipeline.result(i).image for i in range(8)] == [body] * 8


def test_a_crashing_decoder_costs_one_sample(server):
    def crash(data):
        raise RuntimeError("decoder bug")

    with Pipeline(HTTP, LOCAL, crash, [server.url("file/astronaut.jpg")], window=4) as pipeline:
        outcome = pipeline.result(0)
    assert outcome.fetch.ok and outcome.image.status == "failed_decode:internal_error"
    assert "decoder bug" in outcome.image.error


def test_close_before_the_end_does_not_hang(server):
    urls = [server.url("sleep/0.5")] * 20
    started = time.monotonic()
    pipeline = Pipeline(HTTP, LOCAL, len, urls, window=8)
    pipeline.result(0)
    pipeline.close()
    assert time.monotonic() - started < 5


def test_partitions_share_the_worker_threads_and_decode_in_parallel(server):
    threads = Threads(2)
    both_inside = threading.Barrier(2)
    names = set()

    def together(data):
        # Returns only once two decoders are inside at the same time.
        names.add(threading.current_thread().name)
        both_inside.wait(timeout=5)
        return len(data)

    body = len(server.files["astronaut.jpg"][0])
    try:
        for part in range(2):  # two partitions in a row on the same threads
            urls = [server.url(f"file/astronaut.jpg?tag=shared-{part}-{i}") for i in range(6)]
            with Pipeline(HTTP, LOCAL, together, urls, window=6, threads=threads) as pipeline:
                assert [pipeline.result(i).image for i in range(6)] == [body] * 6
            assert threads.loop.is_running()  # a partition's close leaves the worker's loop running
        assert len(names) == 2 and all(n.startswith("decode") for n in names)
    finally:
        threads.close()
    assert not threads.loop.is_running()


def test_decode_threads_default_from_the_worker_cpus():
    assert decode_thread_count(0, 1) == 2
    assert decode_thread_count(0, 0.5) == 2
    assert decode_thread_count(0, 4) == 8
    assert decode_thread_count(3, 4) == 3
