"""Write the VT-Shapes data set (synthetic, deterministic, no download) in mmseg's layout.

Examples::

    python tools/make_vtshapes.py                       # data/vtshapes: 1000 train, 200 val, 96x96
    python tools/make_vtshapes.py --out /tmp/shapes --num-train 16 --num-val 8 --size 64

Files already present are kept, so an interrupted run can simply be repeated.
"""
import argparse
import os.path as osp
import time

from vtseg.datasets import VTSHAPES_CLASSES, make_vtshapes
from vtseg.utils.errors import exit_with_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Make the VT-Shapes segmentation data set')
    parser.add_argument('--out', default='data/vtshapes', help='output folder (data root)')
    parser.add_argument('--num-train', type=int, default=1000, help='training images')
    parser.add_argument('--num-val', type=int, default=200, help='validation images')
    parser.add_argument('--size', type=int, default=96, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='scenes depend only on seed and index')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    problem = None
    if args.num_train < 0 or args.num_val < 0 or args.num_train + args.num_val == 0:
        problem = (f'--num-train {args.num_train} and --num-val {args.num_val}: '
                   'give counts >= 0, at least one of them positive')
    elif args.size < 16:
        problem = f'--size {args.size} is too small: scenes need at least 16 pixels a side'
    elif osp.exists(args.out) and not osp.isdir(args.out):
        problem = f'--out {args.out} exists and is not a folder'
    if problem:
        exit_with_error(__file__, problem)

    start = time.time()
    try:
        make_vtshapes(args.out, num_train=args.num_train, num_val=args.num_val, size=args.size,
                      seed=args.seed)
    except ValueError as err:
        exit_with_error(__file__, str(err))
    print(f'VT-Shapes in {args.out}: {args.num_train} train + {args.num_val} val images of '
          f'{args.size}x{args.size}, classes {", ".join(VTSHAPES_CLASSES)} '
          f'({time.time() - start:.1f} s)')


if __name__ == '__main__':
    main()
