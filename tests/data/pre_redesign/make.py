"""Write the files of this folder with vtseg as it was before the core redesign (commit 294f718).

Run from a checkout of that commit: ``PYTHONPATH=. python <this file> <out dir>``. Each file holds
a small model's state dict, an input and the output that code gave, so the tests can check that
checkpoints trained before the redesign load into today's modules and compute the same.
"""
import sys

import torch

from vtseg.mm import VTFPN
from vtseg.models import VTResNet

out_dir = sys.argv[1]
torch.manual_seed(0)
neck = VTFPN(in_channels=[8, 16, 32], out_channels=8, num_outs=4, num_tokens=2, token_channels=12,
             vt_cfg=dict(qk_channels=6, hidden_channels=10, projector_qk_channels=4)).double().eval()
feats = [torch.randn(2, c, 16 // 2 ** i, 16 // 2 ** i, dtype=torch.double) for i, c in enumerate([8, 16, 32])]
with torch.no_grad():
    outs = neck(feats)
torch.save(dict(state_dict=neck.state_dict(), inputs=feats, outputs=list(outs)), f'{out_dir}/vt_fpn_neck.pth')

model = VTResNet(depth=18, num_classes=0, num_tokens=4, token_channels=16,
                 vt_cfg=dict(qk_channels=8, hidden_channels=12, projector_qk_channels=8)).double().eval()
c4 = torch.randn(2, 256, 3, 5, dtype=torch.double)
with torch.no_grad():
    vt_map, tokens = model.forward_vt(c4)
vt_state = {k: v for k, v in model.state_dict().items() if k.startswith('vt_modules.')}
torch.save(dict(state_dict=vt_state, inputs=c4, outputs=[vt_map, tokens]), f'{out_dir}/vt_resnet18_vt_modules.pth')
