"""Helpers shared by the benchmark scripts: device choice, peak-memory probes, the JSON line."""
from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import gc
import json
import os
import platform
import threading
import time
from typing import Any

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    # On a small shared CPU two OpenMP threads that spin-wait for each other run tiny matmuls
    # ~10× slower than one; the READMEs' CPU numbers use --threads 1.
    if threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """Limit faiss's and the BLAS/OpenMP pools' threads (scikit-learn's) for the block, then
    restore them: under contention two spin-waiting OpenMP threads on 2 cores run ~10× slower."""
    if not threads:
        yield
        return
    import faiss
    from threadpoolctl import threadpool_limits
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        faiss.omp_set_num_threads(before)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "date": _dt.date.today().isoformat()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other jobs on a shared machine skew timings
    except OSError:
        pass
    return info


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS so that an RSS baseline means something."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator statistics on a GPU, sampled
    resident set size (every `interval` s) on CPU, where torch's allocator is invisible to
    tracemalloc."""

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        _trim_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss_bytes()) - self._base


class Timer:
    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """The one final JSON line every benchmark prints."""
    print(json.dumps(result, sort_keys=False), flush=True)
    return result


def mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 3)
