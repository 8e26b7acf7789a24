"""README "Dense inference on folders": the "From Python" example runs as it is written, with a
real config, checkpoint, photo and folder in place of CONFIG, CHECKPOINT, 'photo.jpg' and
'photos/', and writes what its comments say."""
import os
import os.path as osp
import re

import cv2
import numpy as np
from inference_helpers import VTFPN_CONFIG
from PIL import Image
from vtseg_testing import REPO


def readme_example() -> str:
    """The python block after "From Python:" in README.md's "Dense inference on folders"."""
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index('\n## Dense inference on folders\n')
    end = text.find('\n## ', start + 1)
    match = re.search(r'\nFrom Python:\n\n```python\n(.*?)```', text[start:end], re.S)
    assert match, 'README.md "Dense inference on folders" has no "From Python:" python block'
    return match.group(1)


def test_the_from_python_example_runs_as_written(vtfpn_checkpoint, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(4)
    for name, (h, w) in [('photo.jpg', (40, 52)), ('photos/a.jpg', (32, 32)), ('photos/b.png', (24, 40)),
                         ('photos/c.jpg', (32, 32)), ('photos/sub/d.jpg', (48, 36)), ('photos/e.png', (20, 20))]:
        os.makedirs(tmp_path / osp.dirname(name), exist_ok=True)
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    namespace = {'CONFIG': VTFPN_CONFIG, 'CHECKPOINT': vtfpn_checkpoint}
    exec(compile(readme_example(), 'README.md "From Python"', 'exec'), namespace)

    assert namespace['label_map'].shape == (40, 52)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith('done 5, skipped 0, failed 0 of 5 images') and printed[1].startswith('time: ')
    out = tmp_path / 'out'
    names = ['a.jpg', 'b.png', 'c.jpg', osp.join('sub', 'd.jpg'), 'e.png']
    for kind, ext in [('pred', '.png'), ('logits', '.npy'), ('probs', '.npy')]:
        assert sorted(osp.relpath(p, out / kind) for p in (out / kind).rglob('*.*')) == sorted(
            n + ext for n in names), kind
    # the class ids in the palette asked for: cityscapes' first colours
    from mmseg.utils import get_palette
    pred = Image.open(out / 'pred' / 'b.png.png')  # not in part 0 below, which uses the model's
    assert pred.getpalette()[:15] == [v for c in get_palette('cityscapes')[:5] for v in c]
    probs = np.load(out / 'probs' / 'b.png.npy').astype(np.float32)
    assert probs.shape == (5, 24, 40)  # VT-Shapes: 5 classes, at the image's size
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=5e-3)  # float16 probabilities
    np.testing.assert_array_equal(np.argmax(np.load(out / 'logits' / 'b.png.npy'), 0), np.array(pred))

    # the steps: part 0 of 4 is images 0 and 4 of the 5 sorted relative paths (a.jpg, sub/d.jpg);
    # they lacked the overlays the runner writes, so both are done again, with them
    summary = namespace['summary']
    assert (summary.num_done, summary.total, summary.exit_code) == (2, 2, 0)
    assert sorted(osp.relpath(p, out / 'vis') for p in (out / 'vis').rglob('*.jpg')) == [
        'a.jpg.jpg', osp.join('sub', 'd.jpg.jpg')]
    assert not namespace['model'].training
