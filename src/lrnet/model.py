"""The LRNet branch model: landmark dropout -> bidirectional GRU -> residual MLP head -> 2 classes.

One `LRNet` module serves both branches (g1 on block positions, g2 on frame differences). Its
parameter names match the official PyTorch weights, so their state dicts load directly.
The forward pass returns *logits* ``(batch, 2)`` over {real = 0, fake = 1}; use
`fake_probability` / ``softmax`` for probabilities and ``log_softmax`` for losses (never
``log(softmax)``, which underflows to -inf once a probability reaches 0 in float32).

Also here: the TensorFlow-era branch `LegacyLRNet` ("lrnet-tf"), the static `ARCHITECTURES` table
that `build_model` dispatches on and strict state-dict checking. Loading weights into these
networks (`LoadedWeights`, the registry, Keras import, ``lrnet.json``) is `lrnet.weights`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, Mapping

import torch
from torch import nn

from .errors import LrnetError


@dataclass
class ModelConfig:
    """Hyper-parameters of one branch, with the reference code's defaults and key names."""

    feature_size: int = 136
    lm_dropout_rate: float = 0.1
    rnn_unit: int = 32
    num_layers: int = 1
    rnn_dropout_rate: float = 0.0
    fc_dropout_rate: float = 0.5
    res_hidden: int = 64
    # Reference behaviour: one landmark-dropout mask per batch, shared by samples and frames.
    per_sample_mask: bool = False
    arch: str = "lrnet"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Build from a mapping, ignoring keys that are not model hyper-parameters."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class LandmarkDropout(nn.Module):
    """Drop whole landmarks (x and y of a point together) with probability `p` during training.

    Kept points are scaled by ``1 / (1 - p)``. By default one mask of 68 points is drawn per call
    and shared by every sample and frame of the batch (as the reference); with
    ``per_sample=True`` each sample gets its own mask, still shared across its frames.
    Input ``(batch, frames, 2 * points)`` with points interleaved as x0 y0 x1 y1 ...
    """

    def __init__(self, p: float = 0.1, per_sample: bool = False):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"landmark dropout rate must be in [0, 1), got {p}")
        self.p = p
        self.per_sample = per_sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        points = x.shape[-1] // 2
        shape = (x.shape[0], 1, points) if self.per_sample else (points,)
        keep = torch.rand(shape, device=x.device) >= self.p
        mask = keep.to(x.dtype).repeat_interleave(2, dim=-1) / (1.0 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, per_sample={self.per_sample}"


class FeedForward(nn.Module):
    """``Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, d)`` (keys ``net.0``, ``net.3``)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Residual(nn.Module):
    """``x + fn(x)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


GRU_IMPLEMENTATIONS = ("torch", "fused")


class LRNet(nn.Module):
    """One LRNet branch. Input ``(batch, frames, feature_size)``, output logits ``(batch, 2)``.

    `gru` chooses how the bidirectional GRU runs, fixed at construction: ``"torch"`` (``nn.GRU``,
    the default, bit-exact with the reference) or ``"fused"`` (`lrnet.fastgru`: same parameters
    and maths, faster on CPU, used by training; a one-layer GRU on CUDA still runs ``nn.GRU``).
    `bf16`: with ``"fused"``, run the GRU's matrix products in bfloat16 (changes the numbers
    slightly). Neither is part of the config or the state dict.
    """

    def __init__(self, config: ModelConfig | None = None, *, gru: str = "torch", bf16: bool = False,
                 **overrides: Any):
        super().__init__()
        if gru not in GRU_IMPLEMENTATIONS:
            raise LrnetError(f"unknown GRU implementation {gru!r}; expected one of {', '.join(GRU_IMPLEMENTATIONS)}")
        if bf16 and gru != "fused":
            raise LrnetError("bf16 applies to the fused GRU only (set gru=fused)")
        cfg = ModelConfig.from_dict({**(asdict(config) if config else {}), **overrides})
        self.config = cfg
        self.dropout_landmark = LandmarkDropout(cfg.lm_dropout_rate, cfg.per_sample_mask)
        self.gru = nn.GRU(
            input_size=cfg.feature_size,
            hidden_size=cfg.rnn_unit,
            num_layers=cfg.num_layers,
            dropout=cfg.rnn_dropout_rate if cfg.num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=True,
        )
        # Learned initial state, broadcast over the batch.
        self.hidden_state = nn.Parameter(torch.randn(2 * cfg.num_layers, 1, cfg.rnn_unit))
        d = 2 * cfg.num_layers * cfg.rnn_unit
        self.dense = nn.Sequential(
            nn.Dropout(cfg.fc_dropout_rate),
            Residual(FeedForward(d, cfg.res_hidden, cfg.fc_dropout_rate)),
            nn.Dropout(cfg.fc_dropout_rate),
            nn.Linear(d, 2),
        )
        self._gru_impl = gru
        self._bf16 = bool(bf16)

    @property
    def gru_impl(self) -> str:
        """The GRU implementation chosen at construction: "torch", "fused" or "fused-bf16" (read-only)."""
        return "fused-bf16" if self._bf16 else self._gru_impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._gru_impl == "fused" and x.device.type == "cpu":
            from .fastgru import bigru_last_hidden, supports

            if supports(self.gru):
                drop = self.dropout_landmark
                scale = None
                if drop.training and drop.p > 0.0 and not drop.per_sample:
                    # One mask for the whole batch: drawn by the module itself (same random
                    # numbers, same hooks) on a row of ones, then applied to the columns of the
                    # input weights instead of to every frame (x m W^T = x (W diag m)^T).
                    scale = drop(x.new_ones(1, 1, x.shape[-1])).reshape(-1)
                else:
                    x = drop(x)
                h_n = bigru_last_hidden(self.gru, x, self.hidden_state.expand(-1, x.shape[0], -1),
                                        bf16=self._bf16, input_scale=scale)
                return self.dense(h_n.transpose(0, 1).reshape(x.shape[0], -1))
        x = self.dropout_landmark(x)
        h0 = self.hidden_state.expand(-1, x.shape[0], -1).contiguous()
        _, h_n = self.gru(x, h0)  # (2 * layers, batch, units)
        features = h_n.transpose(0, 1).reshape(x.shape[0], -1)  # [l0 fwd, l0 bwd, l1 fwd, ...]
        return self.dense(features)


def fake_probability(logits: torch.Tensor) -> torch.Tensor:
    """p(fake) from ``(batch, 2)`` logits, shape ``(batch,)``."""
    return torch.softmax(logits.float(), dim=-1)[:, 1]


# The TensorFlow-era branch (reference release 1, ``model_tf.py``); its Keras .h5 import is `lrnet.weights.keras`.
LEGACY_ARCH = "lrnet-tf"
LEGACY_DEFAULTS = dict(arch=LEGACY_ARCH, feature_size=136, rnn_unit=64, lm_dropout_rate=0.25,
                       fc_dropout_rate=0.5, res_hidden=64, num_layers=1)


def legacy_config(**overrides: Any) -> ModelConfig:
    """The `ModelConfig` of the TF-era branch (GRU 64, input dropout 0.25, dense 64, dropout 0.5)."""
    return ModelConfig.from_dict({**LEGACY_DEFAULTS, **overrides})


class LegacyLRNet(nn.Module):
    """One TF-era LRNet branch. Input ``(batch, frames, feature_size)``, output logits ``(batch, 2)``.

    Config fields used: ``feature_size``, ``rnn_unit`` (GRU units per direction),
    ``lm_dropout_rate`` (element-wise input dropout), ``fc_dropout_rate`` (both head dropouts),
    ``res_hidden`` (dense hidden size). The architecture has one GRU layer; ``per_sample_mask`` and
    ``rnn_dropout_rate`` do not apply to it.
    """

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        super().__init__()
        base = asdict(config) if config else dict(LEGACY_DEFAULTS)
        cfg = ModelConfig.from_dict({**base, **overrides, "arch": LEGACY_ARCH})
        if cfg.num_layers != 1:
            raise LrnetError(f"model architecture {LEGACY_ARCH!r} has one GRU layer; got num_layers={cfg.num_layers}")
        self.config = cfg
        self.dropout_input = nn.Dropout(cfg.lm_dropout_rate)
        self.gru = nn.GRU(input_size=cfg.feature_size, hidden_size=cfg.rnn_unit, batch_first=True,
                          bidirectional=True)
        self.dense = nn.Sequential(
            nn.Dropout(cfg.fc_dropout_rate),
            nn.Linear(2 * cfg.rnn_unit, cfg.res_hidden),
            nn.ReLU(),
            nn.Dropout(cfg.fc_dropout_rate),
            nn.Linear(cfg.res_hidden, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout_input(x)
        _, h_n = self.gru(x)  # zero initial state; h_n (2, batch, units) = [forward, backward]
        features = h_n.transpose(0, 1).reshape(x.shape[0], -1)
        return self.dense(features)


# Architectures by name (``ModelConfig.arch``).
ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {"lrnet": LRNet, LEGACY_ARCH: LegacyLRNet}


def build_model(config: ModelConfig | None = None, *, gru: str = "torch", bf16: bool = False) -> nn.Module:
    """Instantiate the architecture named by ``config.arch`` ("lrnet" by default).

    `gru` / `bf16`: the GRU implementation of an `LRNet` (see there); architectures without a
    choice (the TF-era branch always runs ``nn.GRU``) ignore them.
    """
    cfg = config or ModelConfig()
    try:
        builder = ARCHITECTURES[cfg.arch]
    except KeyError:
        raise LrnetError(f"unknown model architecture {cfg.arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    if builder is LRNet:
        return LRNet(cfg, gru=gru, bf16=bf16)
    return builder(cfg)


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    if wrong:
        problems.append(f"wrong shapes {wrong[:3]}{' ...' if len(wrong) > 3 else ''}")
    if problems:
        raise LrnetError(f"{source}: state dict does not fit the model ({'; '.join(problems)})")
