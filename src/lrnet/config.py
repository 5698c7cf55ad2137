"""Training configuration: presets, the reference's YAML keys, and command-line overrides.

A `TrainConfig` holds everything ``lrnet train`` needs. It is built in this order, later steps
overriding earlier ones:

1. a named preset (`PRESETS`: ``reference``, ``paper``, ``tf-legacy``; default ``reference``);
2. YAML files (``--config``, repeatable) with the reference's keys, so the reference's
   ``configs/args_train.yaml`` and ``configs/args_model.yaml`` work unchanged
   (``BLOCK_SIZE``, ``BATCH_SIZE``, ``add_dataset_root``, ``add_weights``, ``EPOCHS_g1``,
   ``LEARNING_RATE_g1``, ``weights_name_g1``, the same for g2, and the model keys
   ``feature_size``, ``lm_dropout_rate``, ``rnn_unit``, ``num_layers``, ``rnn_dropout_rate``,
   ``fc_dropout_rate``, ``res_hidden``), or lrnet's own lower-case names (`KEYS`);
3. ``KEY=VALUE`` overrides (``--set``, repeatable; values parsed as YAML scalars).

Unknown keys and values of the wrong type raise `LrnetError` naming the file (or ``--set``), the
key and what was expected.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from .errors import LrnetError
from .model import ModelConfig
from .vocab import PathLike


@dataclass
class TrainConfig:
    """Everything one training run needs (both branches). Defaults are the reference code's."""

    block_size: int = 30
    batch_size: int = 1024
    dataset_root: str = "./datasets"
    output: Optional[str] = None  # add_weights; None: runs/<dataset>-<level>
    epochs_g1: int = 750
    lr_g1: float = 1e-3
    weights_name_g1: str = "g1.pth"
    epochs_g2: int = 400
    lr_g2: float = 1e-3
    weights_name_g2: str = "g2.pth"
    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str = "reference"
    seed: Optional[int] = None
    patience: Optional[int] = None  # epochs without a new best val accuracy before stopping; None: off
    # Speed options (none changes the maths except bf16).
    gru: str = "fused"  # "fused" (lrnet.fastgru, CPU) or "torch" (nn.GRU)
    concurrent: str = "auto"  # train g1 and g2 at the same time: "auto" (CPU, both branches), "on", "off"
    threads: Optional[int] = None  # torch intra-op threads (per branch when concurrent); None: automatic
    # bfloat16 GRU matrix products (fused GRU, CPU: the input projections, and with the C++ loop the
    # hidden products too; fp32 accumulation and states; changes numerics slightly). None: automatic,
    # on where the CPU has native bfloat16 (AVX512-BF16 / AMX), see lrnet.training.resolve_bf16.
    bf16: Optional[bool] = None
    val_batch_size: int = 1024  # blocks per validation forward pass (bounded memory)

    def epochs(self, branch: str) -> int:
        return int(getattr(self, f"epochs_{branch}"))

    def lr(self, branch: str) -> float:
        return float(getattr(self, f"lr_{branch}"))

    def weights_name(self, branch: str) -> str:
        return str(getattr(self, f"weights_name_{branch}"))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict` (used when resuming a run)."""
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in values.items() if k in known and k != "model"}
        return cls(model=ModelConfig.from_dict(values.get("model", {})), **data)


# Reference YAML key -> TrainConfig attribute (model keys go to TrainConfig.model).
REFERENCE_KEYS: Dict[str, str] = {
    "BLOCK_SIZE": "block_size",
    "BATCH_SIZE": "batch_size",
    "add_dataset_root": "dataset_root",
    "add_weights": "output",
    "EPOCHS_g1": "epochs_g1",
    "LEARNING_RATE_g1": "lr_g1",
    "weights_name_g1": "weights_name_g1",
    "EPOCHS_g2": "epochs_g2",
    "LEARNING_RATE_g2": "lr_g2",
    "weights_name_g2": "weights_name_g2",
}
MODEL_KEYS = tuple(f.name for f in fields(ModelConfig))
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("model", "preset"))
KEYS = tuple(REFERENCE_KEYS) + TRAIN_KEYS + MODEL_KEYS

_CHOICES = {"gru": ("fused", "torch"), "concurrent": ("auto", "on", "off")}

PRESETS: Dict[str, Dict[str, Any]] = {
    # The reference code's defaults (training/configs/args_*.yaml).
    "reference": {},
    # The paper's setting (Sun et al., CVPR 2021): GRU 64, 60-frame blocks, dropout 0.25, 500 epochs.
    "paper": {"block_size": 60, "epochs_g1": 500, "epochs_g2": 500, "rnn_unit": 64,
              "lm_dropout_rate": 0.25, "fc_dropout_rate": 0.25},
    # The TensorFlow-era branch (lrnet.weights.keras imports its .h5 files): input dropout 0.25, Dense 64, dropout 0.5.
    "tf-legacy": {"arch": "lrnet-tf", "block_size": 60, "epochs_g1": 500, "epochs_g2": 400, "rnn_unit": 64,
                  "lm_dropout_rate": 0.25, "fc_dropout_rate": 0.5, "res_hidden": 64},
}

PRESET_NOTES = {
    "reference": "the reference code's defaults: block 30, batch 1024, Adam 1e-3, 750 epochs g1 / 400 g2, "
                 "GRU 32, landmark dropout 0.1, dense dropout 0.5, residual hidden 64",
    "paper": "the paper's setting: GRU 64, block 60, dropout 0.25 (landmark and dense), 500 epochs per branch",
    "tf-legacy": "the TensorFlow-era branch (arch lrnet-tf): GRU 64, input dropout 0.25, Dense 64, dropout 0.5, "
                 "block 60, 500 epochs g1 / 400 g2",
}


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    """Convert `value` to the declared type of field `key` (annotation as a string, e.g. ``Optional[int]``)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    optional = text.startswith("Optional[")
    base = text[len("Optional["):-1] if optional else text
    if value is None:
        if optional:
            return None
        raise LrnetError(f"{source}: {key} must not be empty")
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise LrnetError(f"{source}: {key} must be true or false, got {value!r}")
    if base == "int":
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))):
            raise LrnetError(f"{source}: {key} must be an integer, got {value!r}")
        return int(value)
    if base == "float":
        if isinstance(value, str) and _looks_float(value):
            value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LrnetError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if base == "str":
        if isinstance(value, (dict, list)):
            raise LrnetError(f"{source}: {key} must be a single value, got {value!r}")
        value = str(value)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise LrnetError(f"{source}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        return value
    raise AssertionError(f"unsupported field type {text} for {key}")


def apply_values(config: TrainConfig, values: Mapping[str, Any], source: str) -> TrainConfig:
    """Return `config` with `values` (reference or lrnet key names) applied; validates keys and types."""
    train_fields = {f.name: f for f in fields(TrainConfig)}
    model_fields = {f.name: f for f in fields(ModelConfig)}
    train_updates: Dict[str, Any] = {}
    model_updates: Dict[str, Any] = {}
    for raw_key, value in values.items():
        key = REFERENCE_KEYS.get(str(raw_key), str(raw_key))
        if key in model_fields:
            model_updates[key] = _coerce(str(raw_key), value, model_fields[key].type, source)
        elif key in train_fields and key not in ("model", "preset"):
            train_updates[key] = _coerce(str(raw_key), value, train_fields[key].type, source)
        else:
            raise LrnetError(f"{source}: unknown configuration key {raw_key!r}{_suggest(str(raw_key))}")
    model = replace(config.model, **model_updates) if model_updates else config.model
    out = replace(config, model=model, **train_updates)
    validate(out, source)
    return out


# Upper bounds: a typo (an extra zero or six) stops with one line instead of reaching the machine.
MAX_BLOCK_SIZE, MAX_COUNT, MAX_THREADS, MAX_SEED = 100_000, 1_000_000, 4096, 2 ** 32 - 1
MAX_UNITS, MAX_LAYERS = 65_536, 64


def validate(config: TrainConfig, source: str = "configuration") -> None:
    """Range checks with one-line messages."""
    checks = [
        (2 <= config.block_size <= MAX_BLOCK_SIZE, f"BLOCK_SIZE must be 2 to {MAX_BLOCK_SIZE} frames"),
        (1 <= config.batch_size <= MAX_COUNT, f"BATCH_SIZE must be 1 to {MAX_COUNT}"),
        (1 <= config.val_batch_size <= MAX_COUNT, f"val_batch_size must be 1 to {MAX_COUNT}"),
        (all(1 <= e <= MAX_COUNT for e in (config.epochs_g1, config.epochs_g2)),
         f"EPOCHS_g1 / EPOCHS_g2 must be 1 to {MAX_COUNT}"),
        (all(math.isfinite(lr) and lr > 0 for lr in (config.lr_g1, config.lr_g2)),
         "LEARNING_RATE_g1 / LEARNING_RATE_g2 must be finite and positive"),
        (config.seed is None or 0 <= config.seed <= MAX_SEED, f"seed must be 0 to {MAX_SEED} (or empty: random)"),
        (config.patience is None or 1 <= config.patience <= MAX_COUNT,
         f"patience must be 1 to {MAX_COUNT} epochs (or empty: off)"),
        (config.threads is None or 1 <= config.threads <= MAX_THREADS, f"threads must be 1 to {MAX_THREADS}"),
        (0 <= config.model.lm_dropout_rate < 1, "lm_dropout_rate must be in [0, 1)"),
        (0 <= config.model.fc_dropout_rate < 1, "fc_dropout_rate must be in [0, 1)"),
        (0 <= config.model.rnn_dropout_rate < 1, "rnn_dropout_rate must be in [0, 1)"),
        (1 <= config.model.rnn_unit <= MAX_UNITS and 1 <= config.model.res_hidden <= MAX_UNITS,
         f"rnn_unit and res_hidden must be 1 to {MAX_UNITS}"),
        (1 <= config.model.num_layers <= MAX_LAYERS, f"num_layers must be 1 to {MAX_LAYERS}"),
    ]
    for ok, message in checks:
        if not ok:
            raise LrnetError(f"{source}: {message}")


def preset_config(name: str = "reference") -> TrainConfig:
    """The `TrainConfig` of a named preset."""
    if name not in PRESETS:
        raise LrnetError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return replace(apply_values(TrainConfig(), PRESETS[name], f"preset {name}"), preset=name)


def load_yaml(path: PathLike, what: str) -> Any:
    """Parse the YAML file at `path` (safe loader); `what` names it in the one-line errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LrnetError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LrnetError(f"{path}: cannot read {what} ({first})") from None


def read_yaml(path: PathLike) -> Dict[str, Any]:
    """Read a YAML mapping of configuration keys (empty file: no keys)."""
    data = load_yaml(path, "configuration file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LrnetError(f"{path}: expected a mapping of KEY: value, got {type(data).__name__}")
    return data


def parse_override(text: str) -> Tuple[str, Any]:
    """``"KEY=VALUE"`` -> (KEY, VALUE parsed as a YAML scalar: 64 -> int, 1e-3 -> float, true -> bool)."""
    import yaml

    if "=" not in text:
        raise LrnetError(f"--set {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise LrnetError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _looks_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_config(preset: str = "reference", files: Sequence[PathLike] = (), overrides: Iterable[str] = (),
                values: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Preset, then YAML `files`, then ``KEY=VALUE`` `overrides`, then `values` (a dict of keys)."""
    config = preset_config(preset)
    for path in files:
        config = apply_values(config, read_yaml(path), str(path))
    for text in overrides:
        key, value = parse_override(text)
        config = apply_values(config, {key: value}, f"--set {text}")
    if values:
        config = apply_values(config, dict(values), "options")
    return config


def presets_table() -> str:
    """Markdown table of the presets side by side (for ``lrnet train --list-presets`` and the README)."""
    rows = [("arch", "model.arch"), ("block size", "block_size"), ("batch size", "batch_size"),
            ("epochs g1 / g2", None), ("learning rate (Adam)", "lr_g1"), ("GRU units", "model.rnn_unit"),
            ("landmark / input dropout", "model.lm_dropout_rate"), ("dense dropout", "model.fc_dropout_rate"),
            ("residual / dense hidden", "model.res_hidden")]
    configs = {name: preset_config(name) for name in PRESETS}
    lines = ["| setting | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
    for label, attr in rows:
        cells = []
        for cfg in configs.values():
            if attr is None:
                cells.append(f"{cfg.epochs_g1} / {cfg.epochs_g2}")
            elif attr.startswith("model."):
                cells.append(str(getattr(cfg.model, attr[6:])))
            else:
                cells.append(str(getattr(cfg, attr)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
