"""The repository's benchmarks: the harness and the paper's numbers that ``tools/benchmark.py``
and ``tools/get_flops.py`` run and print (not installed with vtseg; the tools put the
repository root on ``sys.path`` to import it).

- :mod:`benchmarks.timing`: interleaved timing, latency statistics, peak memory;
- :mod:`benchmarks.pairs`: the VT / baseline pairs, the speed targets and the configs they use;
- :mod:`benchmarks.paper`: the paper's parameter and multiply-add tables, and our counts beside them.
"""
