"""A baseline written the way the authors' public HSNet code works, for equivalence tests and
the speed benchmark (``python -m hsnet_lite.bench``). Not used by :class:`hsnet_lite.HSNet`.

What makes it the baseline (and slower):

* its center-pivot conv prunes the support dims with ``index_select``, permutes the 6D tensor
  to put one 2D subspace in the batch, makes it contiguous, runs ``conv2d``, permutes back and
  makes it contiguous again, once per subspace;
* its K-shot prediction runs the WHOLE network once per support image, so the query's
  backbone features are recomputed K times.

Module names follow the released checkpoints (``hpn_learner.encoder_layer4.0.conv1.weight``,
``backbone.layer1.0.conv1.weight``...), so ``state_dict()`` of a :class:`ReferenceHSNet` wrapped
in ``nn.DataParallel`` has exactly the keys of an official ``best_model.pt``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from .blocks import SQUEEZE_CONFIG

_NBOTTLENECKS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


class ReferenceCPConv4d(nn.Module):
    """Center-pivot 4D conv with index_select pruning and permute/contiguous round trips."""

    def __init__(self, inch: int, outch: int, k: int, support_stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inch, outch, k, stride=1, padding=k // 2)
        self.conv2 = nn.Conv2d(inch, outch, k, stride=support_stride, padding=k // 2)
        self.stride = support_stride

    def prune(self, ct: torch.Tensor) -> torch.Tensor:
        bsz, ch, ha, wa, hb, wb = ct.size()
        idxh = torch.arange(0, hb, self.stride, device=ct.device)
        idxw = torch.arange(0, wb, self.stride, device=ct.device)
        idx = (idxw.repeat(len(idxh), 1) + idxh.repeat(len(idxw), 1).t() * wb).view(-1)
        return ct.view(bsz, ch, ha, wa, -1).index_select(4, idx).view(bsz, ch, ha, wa, len(idxh), len(idxw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.prune(x) if self.stride > 1 else x
        bsz, inch, ha, wa, hb, wb = out1.size()
        out1 = out1.permute(0, 4, 5, 1, 2, 3).contiguous().view(-1, inch, ha, wa)
        out1 = self.conv1(out1)
        outch, o_ha, o_wa = out1.shape[-3:]
        out1 = out1.view(bsz, hb, wb, outch, o_ha, o_wa).permute(0, 3, 4, 5, 1, 2).contiguous()

        bsz, inch, ha, wa, hb, wb = x.size()
        out2 = x.permute(0, 2, 3, 1, 4, 5).contiguous().view(-1, inch, hb, wb)
        out2 = self.conv2(out2)
        outch, o_hb, o_wb = out2.shape[-3:]
        out2 = out2.view(bsz, ha, wa, outch, o_hb, o_wb).permute(0, 3, 1, 2, 4, 5).contiguous()
        return out1 + out2


def _reference_block(inch: int, outchs, kernels, strides) -> nn.Sequential:
    layers = []
    for outch, k, s in zip(outchs, kernels, strides):
        layers += [ReferenceCPConv4d(inch, outch, k, s), nn.GroupNorm(4, outch), nn.ReLU(inplace=True)]
        inch = outch
    return nn.Sequential(*layers)


class ReferenceLearner(nn.Module):
    """Squeeze/mix/decode with the checkpoint's module names (levels 3, 2, 1 = layer4, 3, 2)."""

    def __init__(self, inch: list[int]) -> None:
        super().__init__()
        (k4, s4), (k3, s3), (k2, s2) = SQUEEZE_CONFIG[3], SQUEEZE_CONFIG[2], SQUEEZE_CONFIG[1]
        self.encoder_layer4 = _reference_block(inch[0], [16, 64, 128], k4, s4)
        self.encoder_layer3 = _reference_block(inch[1], [16, 64, 128], k3, s3)
        self.encoder_layer2 = _reference_block(inch[2], [16, 64, 128], k2, s2)
        self.encoder_layer4to3 = _reference_block(128, [128] * 3, [3] * 3, [1] * 3)
        self.encoder_layer3to2 = _reference_block(128, [128] * 3, [3] * 3, [1] * 3)
        self.decoder1 = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(128, 64, 3, padding=1), nn.ReLU())
        self.decoder2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 2, 3, padding=1))

    @staticmethod
    def interpolate_query_dims(x: torch.Tensor, size) -> torch.Tensor:
        bsz, ch, ha, wa, hb, wb = x.size()
        x = x.permute(0, 4, 5, 1, 2, 3).contiguous().view(bsz * hb * wb, ch, ha, wa)
        x = F.interpolate(x, size, mode="bilinear", align_corners=True)
        return x.view(bsz, hb, wb, ch, *size).permute(0, 3, 4, 5, 1, 2).contiguous()

    def forward(self, corrs: list[torch.Tensor]) -> torch.Tensor:
        sqz4 = self.encoder_layer4(corrs[0])
        sqz3 = self.encoder_layer3(corrs[1])
        sqz2 = self.encoder_layer2(corrs[2])
        mix43 = self.encoder_layer4to3(self.interpolate_query_dims(sqz4, sqz3.shape[2:4]) + sqz3)
        mix432 = self.encoder_layer3to2(self.interpolate_query_dims(mix43, sqz2.shape[2:4]) + sqz2)
        bsz, ch, ha, wa, hb, wb = mix432.size()
        encoded = mix432.view(bsz, ch, ha, wa, -1).mean(dim=-1)
        decoded = self.decoder1(encoded)
        decoded = F.interpolate(decoded, (decoded.size(-1) * 2,) * 2, mode="bilinear", align_corners=True)
        return self.decoder2(decoded)


class ReferenceHSNet(nn.Module):
    """Authors'-style HSNet over a torchvision ResNet50/101 (for checkpoints and benchmarks)."""

    def __init__(self, backbone: str = "resnet50") -> None:
        super().__init__()
        if backbone not in _NBOTTLENECKS:
            raise ValueError(f"the reference model supports {list(_NBOTTLENECKS)}, got {backbone!r}")
        self.backbone = getattr(models, backbone)(weights=None)
        self.backbone.eval()
        nb = _NBOTTLENECKS[backbone]
        self.bottleneck_ids = [b for n in nb for b in range(n)]
        self.lids = [i + 1 for i, n in enumerate(nb) for _ in range(n)]
        self.feat_ids = list(range(4, sum(nb) + 1))
        self.stack_ids = [nb[3], nb[3] + nb[2], nb[3] + nb[2] + nb[1]]
        self.hpn_learner = ReferenceLearner([nb[3], nb[2], nb[1]])

    def extract_feats(self, img: torch.Tensor) -> list[torch.Tensor]:
        bb, feats = self.backbone, []
        feat = bb.maxpool(bb.relu(bb.bn1(bb.conv1(img))))
        for hid, (bid, lid) in enumerate(zip(self.bottleneck_ids, self.lids)):
            block = getattr(bb, f"layer{lid}")[bid]
            res = feat
            feat = block.relu(block.bn1(block.conv1(feat)))
            feat = block.relu(block.bn2(block.conv2(feat)))
            feat = block.bn3(block.conv3(feat))
            if bid == 0:
                res = block.downsample(res)
            feat = feat + res
            if hid + 1 in self.feat_ids:
                feats.append(feat.clone())
            feat = block.relu(feat)
        return feats

    def correlation(self, query_feats, support_feats) -> list[torch.Tensor]:
        corrs = []
        for q, s in zip(query_feats, support_feats):
            bsz, ch, hb, wb = s.size()
            s = s.view(bsz, ch, -1)
            s = s / (s.norm(dim=1, p=2, keepdim=True) + 1e-5)
            _, _, ha, wa = q.size()
            q = q.view(bsz, ch, -1)
            q = q / (q.norm(dim=1, p=2, keepdim=True) + 1e-5)
            corrs.append(torch.bmm(q.transpose(1, 2), s).view(bsz, ha, wa, hb, wb).clamp(min=0))
        i0, i1, i2 = self.stack_ids
        return [torch.stack(corrs[-i0:]).transpose(0, 1).contiguous(),
                torch.stack(corrs[-i1:-i0]).transpose(0, 1).contiguous(),
                torch.stack(corrs[-i2:-i1]).transpose(0, 1).contiguous()]

    def forward(self, query_img: torch.Tensor, support_img: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            query_feats = self.extract_feats(query_img)
            support_feats = self.extract_feats(support_img)
            for i, f in enumerate(support_feats):
                m = F.interpolate(support_mask.unsqueeze(1).float(), f.size()[2:], mode="bilinear", align_corners=True)
                support_feats[i] = f * m
            corr = self.correlation(query_feats, support_feats)
        logit = self.hpn_learner(corr)
        return F.interpolate(logit, support_img.size()[2:], mode="bilinear", align_corners=True)

    def predict_mask_nshot(self, query_img, support_imgs, support_masks) -> torch.Tensor:
        """Whole network once per support, then the paper's vote."""
        agg = 0
        nshot = support_imgs.size(1)
        for s_idx in range(nshot):
            logit = self(query_img, support_imgs[:, s_idx], support_masks[:, s_idx])
            agg = agg + logit.argmax(dim=1).clone()
            if nshot == 1:
                return agg
        bsz = agg.size(0)
        max_vote = agg.view(bsz, -1).max(dim=1)[0]
        max_vote = torch.stack([max_vote, torch.ones_like(max_vote).long()]).max(dim=0)[0].view(bsz, 1, 1)
        pred = agg.float() / max_vote
        pred[pred < 0.5] = 0
        pred[pred >= 0.5] = 1
        return pred
