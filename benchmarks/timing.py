"""Timing and memory measurements of ``tools/benchmark.py`` and the GPU check.

Timing alternates the models call by call (and swaps which goes first every
round), so that load from other processes on a shared machine falls on all of
them alike; ratios between the models are what such a run can be trusted for.
"""
import gc
import math
import resource
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

__all__ = ['time_interleaved', 'percentile', 'summarize', 'RATIO_METRICS', 'ratios',
           'cpu_peak_memory_mib', 'cuda_peak_memory_mib']

# What ratios() divides, VT by baseline, where both sides measured it.
RATIO_METRICS = ('params_m', 'gmacs', 'median_ms', 'p90_ms', 'images_per_s', 'peak_mem_mib',
                 'onnx_median_ms')


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(
        steps: Dict[str, Callable[[], None]],
        repeats: int,
        warmup: int,
        device: torch.device = torch.device('cpu'),
) -> Dict[str, List[float]]:
    """Seconds per call of every step, run in alternation.

    Each round calls every step once; the order is reversed every other round so
    neither side always runs right after the other's cache and allocator traffic.

    Args:
        steps: Name -> callable.
        repeats: Timed rounds.
        warmup: Untimed rounds first.
        device: CUDA timings synchronise before and after each call.

    Returns:
        Name -> ``repeats`` durations in seconds, in call order.
    """
    names = list(steps)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            _sync(device)
            start = time.perf_counter()
            steps[name]()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, linearly interpolated between order statistics (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(seconds: Sequence[float], batch: int) -> dict:
    """Median and p90 latency (ms) and images/s (at the median) of per-call durations."""
    median = statistics.median(seconds) * 1e3
    return dict(median_ms=median, p90_ms=percentile(seconds, 90) * 1e3,
                images_per_s=batch * 1e3 / median, times_ms=[t * 1e3 for t in seconds])


def ratios(vt: dict, baseline: dict) -> Dict[str, float]:
    """VT / baseline for every metric both sides measured (images/s: > 1 means VT is faster)."""
    return {k: vt[k] / baseline[k] for k in RATIO_METRICS
            if vt.get(k) is not None and baseline.get(k)}


def _status_mib() -> Dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of this process, MiB, from /proc/self/status."""
    values = {}
    with open('/proc/self/status') as f:
        for line in f:
            key, _, rest = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return values


def cpu_peak_memory_mib(step: Callable[[], None], calls: int = 2) -> Tuple[float, str]:
    """Peak resident memory that ``step`` adds on top of what the process already holds.

    torch's CPU allocations are plain malloc/mmap, invisible to ``tracemalloc``, so
    this reads the kernel's counters: reset the peak-RSS mark (``VmHWM``) by writing
    5 to ``/proc/self/clear_refs``, note the RSS, run ``step`` ``calls`` times (the
    first call also allocates gradients and lazily built kernels), and report
    ``VmHWM - RSS``. Where the mark cannot be reset it falls back to the
    ``getrusage`` peak minus the RSS before the calls (an underestimate if the
    process peaked earlier). Run it in a fresh process per model, with
    ``MALLOC_MMAP_THRESHOLD_`` low so that freed tensors leave the RSS.

    Returns:
        ``(MiB, method)``.
    """
    gc.collect()
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        method = 'VmHWM-reset'
    except OSError:
        method = 'ru_maxrss'
    before = _status_mib()['VmRSS']
    for _ in range(calls):
        step()
    if method == 'VmHWM-reset':
        peak = _status_mib()['VmHWM']
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return max(peak - before, 0.0), method


def cuda_peak_memory_mib(step: Callable[[], None], device: torch.device,
                         calls: int = 2) -> float:
    """Peak CUDA memory allocated by ``step`` above what was allocated before it, MiB."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(calls):
        step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
