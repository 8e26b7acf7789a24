"""Prepare the offline bundle that the GPU check installs on a machine without network.

Run here (pip must reach its index), then carry ``benchmarks/gpu/bundle`` to the GPU
machine (the device tool's ``carry``); ``benchmarks/gpu/README.md`` has the exact commands.

Examples::

    # the lent H200 machine: Python 3.12, its own torch (2.11): mmcv is built there
    python benchmarks/gpu/prepare.py --python 3.12
    # a target with this machine's torch and Python: the mmcv wheel built here travels too
    python benchmarks/gpu/prepare.py
    # a part only (trials, tests): such a bundle is not installable as a whole
    python benchmarks/gpu/prepare.py --only addict termcolor --out /tmp/bundle

Exit status: 0 done, 1 with one error line (a download failed, the bundle is too large).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import gpu_bundle  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=gpu_bundle.DEFAULT_BUNDLE, help='bundle folder (default: %(default)s)')
    parser.add_argument('--python', default='%d.%d' % sys.version_info[:2],
                        help="the target's Python MAJOR.MINOR (default: this one, %(default)s; the H200 image: 3.12)")
    parser.add_argument('--platform', nargs='+', default=gpu_bundle.MANYLINUX_X86_64,
                        help='pip platform tags the target accepts (for binary --extra wheels)')
    parser.add_argument('--torch', help="the target's torch.__version__ (default: this machine's): carry the mmcv "
                        'wheel built here for it and --python when the cache has one (else mmcv is built there)')
    parser.add_argument('--no-prebuilt', action='store_true', help='never carry a prebuilt mmcv wheel')
    parser.add_argument('--only', nargs='+', help='fetch only these parts (package names, mmcv-source, '
                        'mmcv-prebuilt, vtseg); the bundle is then marked incomplete')
    parser.add_argument('--extra', nargs='+', default=[], help='more wheels, NAME==VERSION (e.g. a binary '
                        'package the target lacks)')
    parser.add_argument('--wheel-dir', help="tools/setup_env.py's mmcv wheel cache (default: its own)")
    parser.add_argument('--limit-mib', type=float, default=gpu_bundle.TRAVEL_LIMIT_MIB,
                        help='what one device call carries, working tree included (default: %(default)s)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        manifest = gpu_bundle.prepare(
            args.out, gpu_bundle.parse_python_version(args.python), args.platform, args.torch,
            not args.no_prebuilt, args.only, args.extra, args.wheel_dir, limit_mib=args.limit_mib)
    except gpu_bundle.BundleError as err:
        print(f'prepare.py: error: {err}', file=sys.stderr)
        return 1
    for entry in manifest['files']:
        print(f'  {entry["file"]:<72} {entry["bytes"] / 2 ** 20:6.2f} MiB')
    total = (manifest['bytes'] + manifest['tree_bytes']) / 2 ** 20
    print(f'bundle for Python {manifest["python"]} in {args.out}: {manifest["bytes"] / 2 ** 20:.1f} MiB; with the '
          f'working tree {total:.1f} of {args.limit_mib:g} MiB'
          + ('' if manifest['complete'] else ' (incomplete: --only)'))
    if manifest['mmcv_prebuilt_key']:
        print(f'mmcv: the wheel built here for {manifest["mmcv_prebuilt_key"]} (used if the target matches, '
              'else built there from the carried source)')
    elif 'mmcv-source' in manifest['parts']:
        print('mmcv: built on the target from the carried source (CPU ops, about 1-2 min on 16 cores)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
