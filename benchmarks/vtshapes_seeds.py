"""VT-Shapes results as a newcomer gets them: each seed in a fresh venv, set up by the README's command.

For every seed: ``python3 -m venv`` in a temporary folder, ``bash tools/setup.sh --minimal``
inside it (mmcv comes from the verified wheel cache when one exists), then ``tools/demo.py
--config C --seed S`` for each VT-Shapes config with that venv's Python, exactly as the README
runs the demo. The val mIoU of every run, and per config the mean and range over the seeds,
go to ``benchmarks/results/vtshapes_seeds.{json,md}``::

    python benchmarks/vtshapes_seeds.py                      # 3 seeds x 3 configs, ~80 min on 2 cores
    python benchmarks/vtshapes_seeds.py --seeds 0 --configs configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py
    python benchmarks/vtshapes_seeds.py --python "$(command -v python)"   # reuse this env instead of fresh venvs
    # one process per seed (e.g. OMP_NUM_THREADS=1 each), then one summary of their results:
    python benchmarks/vtshapes_seeds.py --seeds 1 --out /tmp/seed1 & ...
    python benchmarks/vtshapes_seeds.py --summarise /tmp/seed0.json /tmp/seed1.json /tmp/seed2.json
"""
import argparse
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Runs with any python3 (it makes the venvs), so it imports nothing of vtseg or its dependencies.
FRESH_VENV = 'fresh venv (tools/setup.sh --minimal)'
CONFIGS = [
    'configs/vtshapes/fpn_r18_1xb8-1.5k_vtshapes-96x96.py',
    'configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py',
    'configs/vtshapes/vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96.py',
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--configs', nargs='+', default=CONFIGS)
    parser.add_argument('--python', help='use this Python for every seed instead of a fresh venv per seed')
    parser.add_argument('--work-dir', default='work_dirs/vtshapes_seeds')
    parser.add_argument('--summarise', nargs='+', metavar='JSON',
                        help='only summarise the runs in these result files of earlier invocations')
    parser.add_argument('--out', default=osp.join(REPO, 'benchmarks', 'results', 'vtshapes_seeds'),
                        help='output path without extension (.json and .md are written)')
    return parser.parse_args()


def fresh_venv(folder: str) -> str:
    """A new venv in ``folder`` set up with the README's command; returns its Python."""
    subprocess.run([sys.executable, '-m', 'venv', folder], check=True)
    python = osp.join(folder, 'bin', 'python')
    env = dict(os.environ, PATH=osp.join(folder, 'bin') + os.pathsep + os.environ['PATH'], VIRTUAL_ENV=folder)
    env.pop('PYTHONHOME', None)
    subprocess.run(['bash', osp.join(REPO, 'tools', 'setup.sh'), '--minimal'], check=True, env=env, cwd=REPO)
    return python


def run_demo(python: str, config: str, seed: int, work_dir: str, setup: str) -> Dict:
    """Run the demo with ``python`` and return what it reached, with where and how it ran."""
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or 'unknown'
    start = time.time()
    proc = subprocess.run([python, 'tools/demo.py', '--config', config, '--seed', str(seed), '--work-dir', work_dir],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'demo failed for {config} seed {seed}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    miou = float(re.search(r'val mIoU:\s+([0-9.]+)', proc.stdout).group(1))
    versions = subprocess.run([python, '-c', 'import torch, mmcv, mmseg; print(torch.__version__, mmcv.__version__, '
                               'mmseg.__version__, torch.get_num_threads())'],
                              capture_output=True, text=True, check=True).stdout.split()
    return dict(config=config, seed=seed, miou=miou, wall_s=round(time.time() - start, 1),
                torch=versions[0], mmcv=versions[1], mmseg=versions[2], torch_threads=int(versions[3]),
                setup=setup, commit=commit)


def summarise(runs: List[Dict]) -> List[Dict]:
    rows = []
    for config in dict.fromkeys(run['config'] for run in runs):
        mious = [run['miou'] for run in runs if run['config'] == config]
        rows.append(dict(config=config, seeds=len(mious), mean=round(statistics.mean(mious), 3),
                         min=min(mious), max=max(mious), per_seed=mious))
    return rows


def markdown(rows: List[Dict], runs: List[Dict]) -> str:
    lines = ['| config | seeds | val mIoU mean | min | max | per seed |', '|---|---:|---:|---:|---:|---|']
    for row in rows:
        lines.append(f'| `{osp.basename(row["config"])[:-3]}` | {row["seeds"]} | {row["mean"]:.3f} | '
                     f'{row["min"]:.3f} | {row["max"]:.3f} | {", ".join(f"{m:.3f}" for m in row["per_seed"])} |')
    walls = [run['wall_s'] for run in runs]
    lines.append('')
    threads = sorted({run['torch_threads'] for run in runs})
    lines.append(f'torch {runs[0]["torch"]}, mmcv {runs[0]["mmcv"]}, mmseg {runs[0]["mmseg"]}, '
                 f'{"/".join(map(str, threads))} torch threads, {os.cpu_count()} CPUs; demo wall time '
                 f'{min(walls) / 60:.1f}-{max(walls) / 60:.1f} min per run.')
    lines.append('')
    lines.append('| config | seed | val mIoU | commit | set up in | torch threads | wall min |')
    lines.append('|---|---:|---:|---|---|---:|---:|')
    for run in runs:
        # runs recorded before these fields existed were all made in fresh venvs
        lines.append(f'| `{osp.basename(run["config"])[:-3]}` | {run["seed"]} | {run["miou"]:.3f} | '
                     f'{run.get("commit", "-")} | {run.get("setup", FRESH_VENV)} | {run["torch_threads"]} | '
                     f'{run["wall_s"] / 60:.1f} |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    args = parse_args()
    runs = []
    for path in args.summarise or []:
        with open(path) as f:
            runs.extend(json.load(f)['runs'])
    for seed in [] if args.summarise else args.seeds:
        with tempfile.TemporaryDirectory(prefix=f'vtseg-seed{seed}-') as tmp:
            python = args.python or fresh_venv(osp.join(tmp, 'venv'))
            setup = f'existing env ({args.python})' if args.python else FRESH_VENV
            for config in args.configs:
                name = osp.basename(config)[:-3]
                run = run_demo(python, config, seed, osp.join(args.work_dir, name, f'seed{seed}'), setup)
                print(json.dumps(run), flush=True)
                runs.append(run)
    rows = summarise(runs)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out + '.json', 'w') as f:
        json.dump(dict(summary=rows, runs=runs), f, indent=1)
    with open(args.out + '.md', 'w') as f:
        f.write(markdown(rows, runs))
    print(markdown(rows, runs))


if __name__ == '__main__':
    main()
