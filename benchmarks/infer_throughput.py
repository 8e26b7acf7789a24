"""Folder inference throughput: tools/infer.py (1 and 2 processes) against mmseg's MMSegInferencer.

Usage::

    python benchmarks/infer_throughput.py                      # 200 images, 2 rounds
    python benchmarks/infer_throughput.py --images 400 --rounds 3 --out benchmarks/results/infer-throughput
    python benchmarks/infer_throughput.py --folder my_photos/ --out /tmp/my-photos   # your own images

The model is the VT-Shapes demo config (``configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py``)
with the demo's trained checkpoint where one exists (``--checkpoint``), else random weights
(throughput does not depend on the weights). The folder is generated: ``--images`` JPEGs
of VT-Shapes scenes rendered at sizes from 96 to 184 pixels a side, non-square, at JPEG
qualities 75-95, in a few sub-folders; ``--folder`` times a folder of your own instead.
Every way of ``tools/infer.py`` runs with ``--no-auto-slide``, so that images larger than twice
the crop size are predicted whole, as ``MMSegInferencer`` predicts them.

Each way runs in a fresh process, once per round, the ways interleaved (a different
order each round) so that the load of this shared machine falls on all of them alike:

- ``infer``: ``tools/infer.py`` (class-id PNG + overlay per image), default loader workers
  and writer threads;
- ``infer --no-vis``: class-id PNGs only;
- ``infer --no-vis --no-channels-last``: the same with the model in the default memory format,
  which measures what ``SegInferencer``'s channels-last default gains;
- ``infer 2 proc``, ``infer 2 proc --no-vis``: the same through ``tools/dist_infer.sh`` (torchrun,
  2 gloo processes, torchrun's default of one OpenMP thread each);
- ``mmseg``: ``MMSegInferencer(config, checkpoint)(paths, out_dir=...)``, which writes a
  class-id PNG and a drawn overlay per image (its ``out_dir`` mode), batch size 1.

The time compared is the folder loop (the model loaded, every output written): the summary
line of ``tools/infer.py`` (the slowest process for 2 processes) and a timer around
``MMSegInferencer.__call__``; process wall time is reported as well. For ``tools/infer.py``
the time per stage (decode, predict, encode, write, summed over workers, threads and
processes) and the main loop's wait for decoded images come from its ``time:`` line.

Results: ``--out`` (``.json`` and ``.md``) and stdout, with the load average before and after.
"""
import argparse
import json
import os
import os.path as osp
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
DEMO_CHECKPOINT = osp.join(REPO, 'work_dirs', 'vtshapes_seeds', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96', 'seed0',
                           'iter_1500.pth')
WAYS = ('infer', 'infer --no-vis', 'infer --no-vis --no-channels-last', 'infer 2 proc', 'infer 2 proc --no-vis',
        'mmseg')
STAGES = ('decode', 'predict', 'encode', 'write', 'waited')

MMSEG_SCRIPT = '''
import glob, json, os, sys, time
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # as tools/infer.py sets it
import vtseg
vtseg.mm.allow_mmengine_checkpoints()
from mmseg.apis import MMSegInferencer
config, checkpoint, folder, out_dir = sys.argv[1:5]
inferencer = MMSegInferencer(config, checkpoint, device='cpu')
from vtseg.apis import is_image_file
paths = sorted(p for p in glob.glob(os.path.join(folder, '**', '*'), recursive=True) if is_image_file(p))
start = time.perf_counter()
inferencer(paths, out_dir=out_dir, batch_size=1)
print(json.dumps(dict(seconds=time.perf_counter() - start, images=len(paths))))
'''


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=200, help='JPEGs in the generated folder')
    parser.add_argument('--folder', default=None,
                        help='time this folder of images instead of a generated one: every image must decode '
                        '(MMSegInferencer stops at the first that does not) and base names must be unique '
                        '(its out_dir names outputs by them)')
    parser.add_argument('--rounds', type=int, default=2, help='runs of each way, interleaved')
    parser.add_argument('--checkpoint', default=None,
                        help=f'checkpoint of the demo config (default: {osp.relpath(DEMO_CHECKPOINT, REPO)} '
                        'if it exists, else random weights)')
    parser.add_argument('--ways', nargs='+', default=list(WAYS), choices=WAYS, metavar='WAY',
                        help=f'ways to run (default: all of {", ".join(WAYS)})')
    parser.add_argument('--out', default=osp.join(REPO, 'benchmarks', 'results', 'infer-throughput'),
                        help='results path without extension (.json and .md are written)')
    return parser.parse_args(argv)


def make_folder(folder: str, count: int) -> None:
    """``count`` VT-Shapes scenes as JPEGs of varied sizes and qualities in a few sub-folders."""
    import cv2
    import numpy as np

    from vtseg.datasets.vtshapes import render_scene
    rng = np.random.default_rng(0)
    for index in range(count):
        height, width = (int(side) for side in rng.integers(96, 185, 2))
        image, _ = render_scene(index, size=max(height, width), seed=1)
        image = np.ascontiguousarray(image[:height, :width, ::-1])  # RGB scene -> BGR for OpenCV
        sub = osp.join(folder, f'set{index % 4}')
        os.makedirs(sub, exist_ok=True)
        cv2.imwrite(osp.join(sub, f'scene_{index:04d}.jpg'), image,
                    [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])


def random_checkpoint(path: str) -> str:
    import torch

    from vtseg.apis import build_model
    torch.manual_seed(0)
    torch.save({'state_dict': build_model(CONFIG).state_dict()}, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_way(way: str, folder: str, checkpoint: str, out_dir: str) -> dict:
    """One run of ``way`` in fresh processes: loop seconds, images/s, wall seconds, stages."""
    env = {**os.environ, 'PATH': osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
           'PORT': str(free_port()), 'CUDA_VISIBLE_DEVICES': ''}
    if way == 'mmseg':
        command = [sys.executable, '-c', MMSEG_SCRIPT, CONFIG, checkpoint, folder, out_dir]
    elif '2 proc' in way:
        command = ['bash', osp.join(REPO, 'tools', 'dist_infer.sh'), folder, CONFIG, checkpoint, '2',
                   '--out-dir', out_dir]
    else:
        command = [sys.executable, osp.join(REPO, 'tools', 'infer.py'), folder, CONFIG, checkpoint,
                   '--out-dir', out_dir]
    if way != 'mmseg':
        # like for like: MMSegInferencer slides only where the config's test_cfg says so
        command.append('--no-auto-slide')
    for option in ('--no-vis', '--no-channels-last'):
        if option in way:
            command.append(option)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f'{way} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    result = dict(way=way, wall_seconds=wall)
    if way == 'mmseg':
        measured = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(seconds=measured['seconds'], images=measured['images'])
    else:
        done = re.search(r'done (\d+), skipped 0, failed 0 of \d+ images in ([\d.]+) s', proc.stdout)
        stages = re.search(r'time: decode ([\d.]+) s, predict ([\d.]+) s, encode ([\d.]+) s, write ([\d.]+) s'
                           r'.*waited ([\d.]+) s', proc.stdout)
        if not done or not stages:
            raise RuntimeError(f'{way}: no summary in its output:\n{proc.stdout[-3000:]}')
        result.update(images=int(done.group(1)), seconds=float(done.group(2)),
                      stages=dict(zip(STAGES, map(float, stages.groups()))))
    files = sum(len(names) for _, _, names in os.walk(out_dir))
    expected = result['images'] * (1 if '--no-vis' in way else 2)
    if files != expected:
        raise RuntimeError(f'{way} wrote {files} files, expected {expected}')
    result['images_per_second'] = result['images'] / result['seconds']
    return result


def summarise(runs: List[dict]) -> Dict[str, dict]:
    """Per way: median images/s, loop and wall seconds over the rounds; mean stage seconds."""
    table = {}
    for way in WAYS:
        mine = [run for run in runs if run['way'] == way]
        if not mine:
            continue
        row = dict(images_per_second=statistics.median(r['images_per_second'] for r in mine),
                   all_images_per_second=[round(r['images_per_second'], 2) for r in mine],
                   seconds=statistics.median(r['seconds'] for r in mine),
                   wall_seconds=statistics.median(r['wall_seconds'] for r in mine))
        if 'stages' in mine[0]:
            row['stages'] = {s: statistics.mean(r['stages'][s] for r in mine) for s in STAGES}
        table[way] = row
    return table


def markdown(table: Dict[str, dict], meta: dict) -> str:
    mmseg = table.get('mmseg', {}).get('images_per_second')
    lines = [f'{meta["images"]} {meta["described"]}, {meta["rounds"]} rounds interleaved, '
             f'{meta["cpus"]} CPUs, model: {meta["model"]}; load average {meta["load_before"]} before, '
             f'{meta["load_after"]} after.', '',
             '| way | img/s (median) | per round | vs mmseg | loop s | process s | decode s | predict s '
             '| encode s | write s | waited s |',
             '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for way, row in table.items():
        stages = row.get('stages')
        cells = [f'{stages[s]:.1f}' for s in STAGES] if stages else ['-'] * len(STAGES)
        ratio = f'{row["images_per_second"] / mmseg:.2f}x' if mmseg else '-'
        lines.append(f'| {way} | {row["images_per_second"]:.1f} | {row["all_images_per_second"]} | {ratio} | '
                     f'{row["seconds"]:.1f} | {row["wall_seconds"]:.1f} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='vtseg-throughput-') as work:
        if args.folder:
            folder = osp.abspath(args.folder)
        else:
            folder = osp.join(work, 'photos')
            make_folder(folder, args.images)
        checkpoint = args.checkpoint or (DEMO_CHECKPOINT if osp.isfile(DEMO_CHECKPOINT) else None)
        model = f'demo checkpoint {osp.relpath(checkpoint, REPO)}' if checkpoint else 'random weights'
        checkpoint = checkpoint or random_checkpoint(osp.join(work, 'random.pth'))
        load_before = os.getloadavg()
        runs = []
        for round_index in range(args.rounds):
            order = list(args.ways) if round_index % 2 == 0 else list(reversed(args.ways))
            for way in order:
                out_dir = osp.join(work, 'out')
                run = run_way(way, folder, checkpoint, out_dir)
                shutil.rmtree(out_dir)
                run['round'] = round_index
                runs.append(run)
                print(f'round {round_index}: {way}: {run["images_per_second"]:.1f} img/s '
                      f'({run["seconds"]:.1f} s loop, {run["wall_seconds"]:.1f} s process)', flush=True)
        described = (f'images of {folder}' if args.folder else
                     'JPEGs (96-184 px a side, VT-Shapes scenes, JPEG quality 75-95)')
        meta = dict(images=runs[0]['images'], described=described,
                    rounds=args.rounds, cpus=os.cpu_count(), model=model, host=platform.node(),
                    load_before=[round(x, 2) for x in load_before],
                    load_after=[round(x, 2) for x in os.getloadavg()], python=platform.python_version())
    table = summarise(runs)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out + '.json', 'w') as f:
        json.dump(dict(meta=meta, summary=table, runs=runs), f, indent=2)
    text = markdown(table, meta)
    with open(args.out + '.md', 'w') as f:
        f.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
