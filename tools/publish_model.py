"""Publish a trained checkpoint as OpenMMLab publishes models.

Keeps the weights and meta (drops optimizer, scheduler and message-hub state) and
names the file ``OUT_STEM-<first 8 hex digits of its SHA-256>.pth``, the suffix
``torch.hub`` verifies downloads against (:func:`vtseg.mm.checkpoint.publish_checkpoint`).

Example (the VT-Shapes demo model, see configs/vtshapes/README.md)::

    python tools/publish_model.py work_dirs/demo/iter_1500.pth \\
        work_dirs/demo/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96_20261130.pth
    # -> work_dirs/demo/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96_20261130-1a2b3c4d.pth
"""
import argparse

from vtseg.mm.checkpoint import allow_mmengine_checkpoints, publish_checkpoint
from vtseg.utils.errors import exit_with_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Strip a checkpoint to weights + meta and add '
                                     'its SHA-256 prefix to the file name')
    parser.add_argument('in_file', help='checkpoint written by tools/train.py (WORK_DIR/iter_N.pth)')
    parser.add_argument('out_file', help='published name before the hash, ending in .pth')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    allow_mmengine_checkpoints()  # the training checkpoint holds mmengine's message-hub state
    try:
        published = publish_checkpoint(args.in_file, args.out_file)
    except (FileNotFoundError, ValueError) as err:
        exit_with_error(__file__, str(err))
    print(published)


if __name__ == '__main__':
    main()
