"""Wav2Lip generator in PyTorch, written from the published architecture facts.

State-dict keys match the official `wav2lip.pth` / `wav2lip_gan.pth` checkpoints exactly, so a
user's checkpoint loads strictly into this module.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv2d -> BatchNorm2d -> (+input if residual) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride, padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpBlock(nn.Module):
    """ConvTranspose2d -> BatchNorm2d -> ReLU (same state keys as ConvBlock)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(ch: int) -> ConvBlock:
    return ConvBlock(ch, ch, 3, 1, 1, residual=True)


class Wav2Lip(nn.Module):
    """mel [B,1,80,16] + face [B,6,96,96] (BGR in [0,1]) -> face [B,3,96,96] in [0,1]."""

    def __init__(self):
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),
            nn.Sequential(ConvBlock(16, 32, 3, 2, 1), _res(32), _res(32)),
            nn.Sequential(ConvBlock(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),
            nn.Sequential(ConvBlock(64, 128, 3, 2, 1), _res(128), _res(128)),
            nn.Sequential(ConvBlock(128, 256, 3, 2, 1), _res(256), _res(256)),
            nn.Sequential(ConvBlock(256, 512, 3, 2, 1), _res(512)),
            nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),
        ])
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 32, 3, 1, 1), _res(32), _res(32),
            ConvBlock(32, 64, 3, (3, 1), 1), _res(64), _res(64),
            ConvBlock(64, 128, 3, 3, 1), _res(128), _res(128),
            ConvBlock(128, 256, 3, (3, 2), 1), _res(256),
            ConvBlock(256, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),
            nn.Sequential(UpBlock(1024, 512, 3, 1, 0), _res(512)),
            nn.Sequential(UpBlock(1024, 512, 3, 2, 1, 1), _res(512), _res(512)),
            nn.Sequential(UpBlock(768, 384, 3, 2, 1, 1), _res(384), _res(384)),
            nn.Sequential(UpBlock(512, 256, 3, 2, 1, 1), _res(256), _res(256)),
            nn.Sequential(UpBlock(320, 128, 3, 2, 1, 1), _res(128), _res(128)),
            nn.Sequential(UpBlock(160, 64, 3, 2, 1, 1), _res(64), _res(64)),
        ])
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        audio_embedding = self.audio_encoder(mel)
        feats = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        x = audio_embedding
        for block in self.face_decoder_blocks:
            x = block(x)
            x = torch.cat((x, feats.pop()), dim=1)
        return self.output_block(x)


class Wav2LipServing(nn.Module):
    """The graph Triton serves: raw uint8 crops in, uint8 crops out.

    Folding the /255 scaling, the lower-half mask and the HWC->CHW layout into the graph lets a
    client send one 27 KB uint8 crop per frame instead of a 221 KB float32 six-channel tensor.

    inputs:  mel  float32 [B,80,16]      normalised log-mel window, range [-4, 4]
             face uint8   [B,96,96,3]    BGR face crop, HWC
    output:  face_out uint8 [B,96,96,3]  BGR generated crop, HWC
    """

    def __init__(self, net: Wav2Lip):
        super().__init__()
        self.net = net
        mask = torch.ones(1, 3, 96, 96)
        mask[:, :, 48:, :] = 0.0
        self.register_buffer("lower_half_mask", mask, persistent=False)

    def network_inputs(self, mel: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Served tensors -> the inputs Wav2Lip was trained on: mel [B,1,80,16], face [B,6,96,96]."""
        ref = face.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        masked = ref * self.lower_half_mask
        return mel.unsqueeze(1), torch.cat((masked, ref), dim=1)

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        pred = self.net(*self.network_inputs(mel, face))
        out = torch.round(pred * 255.0).clamp(0.0, 255.0).to(torch.uint8)
        return out.permute(0, 2, 3, 1)
