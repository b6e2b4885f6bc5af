"""LLM request throughput: polyret's OpenAIBackend (async, bounded concurrency) vs the openai SDK used the
usual ways (a plain loop, and a thread pool), against the same localhost chat-completions server that
answers every request after a fixed delay (a stand-in for model latency; no real LLM is reachable here).

  python benchmarks/llm_client.py [--requests 400 --latency 0.05]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "synthesis"))

import openai

from chat_server import ChatServer, Reply, completion
from polyret.synthesis.llm import BackendConfig


def _serve(latency: float, urls: multiprocessing.Queue) -> None:
    """The server runs in its own process, so it does not share the client's GIL."""
    reply = lambda body, attempt: Reply(body=completion("Summary.\nQuery: q?"), delay_s=latency)
    with ChatServer(reply) as server:
        urls.put(server.base_url)
        time.sleep(3600)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--latency", type=float, default=0.05, help="seconds the server waits before each reply")
    p.add_argument("--repeats", type=int, default=3, help="runs per client; the median rate is reported")
    args = p.parse_args()
    prompts = [[{"role": "user", "content": f"prompt {i}"}] for i in range(args.requests)]
    urls: multiprocessing.Queue = multiprocessing.Queue()
    server_process = multiprocessing.Process(target=_serve, args=(args.latency, urls), daemon=True)
    server_process.start()
    base_url = urls.get(timeout=30)
    results = {}
    try:

        def sdk_call(client, messages):
            return client.chat.completions.create(model="m", messages=messages).choices[0].message.content

        def rate(run, n: int) -> float:
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            return n / statistics.median(times)

        client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
        n = min(args.requests, 50)  # the sequential loops are slow; time a slice
        results["openai SDK, sequential loop"] = rate(lambda: [sdk_call(client, m) for m in prompts[:n]], n)
        for workers in (8, 32):
            def pooled():
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(lambda m: sdk_call(client, m), prompts))
            results[f"openai SDK, {workers} threads"] = rate(pooled, args.requests)
        for concurrency in (1, 8, 32, 64):
            backend = BackendConfig(model="m", base_url=base_url, max_concurrency=concurrency).build()
            subset = prompts[:n] if concurrency == 1 else prompts
            assert all(c.error is None for c in backend.generate(subset[:4]))  # warm: loop, client, connections
            results[f"polyret OpenAIBackend, concurrency {concurrency}"] = rate(lambda: backend.generate(subset),
                                                                                len(subset))
            backend.close()
    finally:
        server_process.terminate()
    base = results["openai SDK, sequential loop"]
    print(f"{args.requests} requests, server latency {args.latency * 1000:.0f} ms")
    print(f"{'client':45s} {'requests/s':>11s} {'vs loop':>8s}")
    for name, rate in results.items():
        print(f"{name:45s} {rate:11.1f} {rate / base:7.1f}x")
    print(f"ideal at concurrency c: c / latency = {1 / args.latency:.0f} x c requests/s")


if __name__ == "__main__":
    main()
