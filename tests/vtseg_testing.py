"""Helpers shared by the tests (import as ``from vtseg_testing import ...``).

A plain module rather than ``conftest``: several test folders have a conftest.py
of their own, and ``from vtseg_testing import`` would pick whichever was imported first.
"""
import os
import os.path as osp
import subprocess
import sys
from typing import List

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def gradcheck_inputs_and_weights(module, *inputs) -> bool:
    """``torch.autograd.gradcheck`` of a float64 ``module`` with respect to its inputs (those
    that require grad), then with respect to all its weights, the inputs held fixed."""
    import torch
    assert torch.autograd.gradcheck(module, inputs)
    names = [name for name, _ in module.named_parameters()]
    fixed = tuple(x.detach() for x in inputs)

    def of_weights(*weights):
        return torch.func.functional_call(module, dict(zip(names, weights)), fixed)
    return torch.autograd.gradcheck(of_weights, tuple(p.detach().requires_grad_() for p in module.parameters()))


class PickledCommand:
    """Unpickled, it runs ``touch MARKER``: what a checkpoint must never get to do."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def save_pickled_code_checkpoint(path, marker) -> str:
    """A checkpoint at ``path`` whose ``state_dict`` is a :class:`PickledCommand`; returns ``path``."""
    import torch
    torch.save({'state_dict': PickledCommand(marker)}, str(path))
    return str(path)


def make_torch_load_unsafe_by_default(monkeypatch) -> None:
    """``torch.load`` as before torch 2.6: ``weights_only=False`` unless the caller passes it."""
    import torch
    torch_load = torch.load

    def old_default_load(*args, weights_only=False, **kwargs):
        return torch_load(*args, weights_only=weights_only, **kwargs)
    monkeypatch.setattr(torch, 'load', old_default_load)


def vtshapes_options(root: str) -> list:
    """``--cfg-options`` that point a VT-Shapes config at ``root`` and keep a run short."""
    return [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', 'train_dataloader.batch_size=4',
            'default_hooks.logger.interval=1']


def run_tool(args: list, cwd: str = REPO, timeout: int = 600, env: dict = None) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in a fresh process; fail the test with its output if it fails."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


def as_cfg_options(options: dict) -> list:
    """``key=value`` words for a tool's ``--cfg-options`` from a dict of overrides.

    Values are written as mmengine's ``DictAction`` parses them back: ``(64, 64)`` as
    ``(64,64)``, ``None`` as ``None``, strings unquoted.
    """
    return [f'{key}=' + str(value).replace(' ', '').replace("'", '') for key, value in options.items()]


def make_lip(root: str) -> str:
    """A tiny LIP data set at ``root/LIP`` as ``tools/dataset_converters/lip.py`` leaves it
    (from the miniature download of :func:`test_configs.fake_datasets.write_lip_download`)."""
    from test_configs.fake_datasets import write_lip_download
    out = osp.join(root, 'LIP')
    run_tool([osp.join('tools', 'dataset_converters', 'lip.py'),
              write_lip_download(osp.join(root, 'download'), as_zip=True), '-o', out])
    return out


def kill_loader_workers_at(monkeypatch, name_suffix: str) -> None:
    """Make folder inference's loader workers die as the kernel's OOM killer kills them: a (forked)
    worker that starts decoding a path ending in ``name_suffix`` sends itself SIGKILL. The main
    process decodes as before."""
    import signal

    import vtseg.apis.folder as folder_module
    main_process, real_load = os.getpid(), folder_module.load_image

    def load(path):
        if os.getpid() != main_process and path.endswith(name_suffix):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_load(path)
    monkeypatch.setattr(folder_module, 'load_image', load)


def press_ctrl_c_when_loading(monkeypatch, name_suffix: str) -> None:
    """Make folder inference's decoder raise ``KeyboardInterrupt``, as Ctrl-C would, when it
    starts on a path ending in ``name_suffix`` (in the process that decodes: run without loader
    workers to get it in the main one)."""
    import vtseg.apis.folder as folder_module
    real_load = folder_module.load_image

    def load(path):
        if path.endswith(name_suffix):
            raise KeyboardInterrupt
        return real_load(path)
    monkeypatch.setattr(folder_module, 'load_image', load)


def read(path: str) -> str:
    """The text of a file of the repository (``path`` relative to its root)."""
    with open(osp.join(REPO, path), encoding='utf-8') as f:
        return f.read()


def section(text: str, title: str) -> str:
    """The text of the ``## title`` section of a markdown file, up to the next ``## `` heading."""
    start = text.index(f'\n## {title}\n')
    end = text.find('\n## ', start + 1)
    return text[start:end if end != -1 else len(text)]


def assert_says(text: str, fragments: List[str], where: str) -> None:
    """Fail, listing them, when ``text`` lacks some of ``fragments`` (its line breaks read as spaces)."""
    flat = ' '.join(text.split())
    missing = [fragment for fragment in fragments if fragment not in flat]
    assert not missing, f'{where} does not say what the result files say now; it should say:\n' + '\n'.join(missing)
