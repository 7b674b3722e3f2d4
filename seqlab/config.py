"""Typed configs: dataclasses that check themselves, YAML files and dotted overrides.

A config is read as plain data (YAML), overridden with ``key.sub=value`` pairs, a
model preset (if named) is laid under the user's keys, and the result is converted
field by field into dataclasses. Unknown keys are errors naming the closest valid key;
values of the wrong type are errors naming the key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from seqlab.errors import ConfigError
from seqlab.registry import closest


@dataclass
class ModelConfig:
    """Architecture: ``embed -> n_layers x Block(mixer, ffn) -> norm -> head``.

    ``mixer`` is one registry key or a list of one key per layer (hybrid stacks).
    ``mixer_options`` maps a mixer name to its own options (e.g. ``lstm: {num_layers: 2}``).
    """

    preset: str | None = None
    mixer: Union[str, list[str]] = "attention"
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    ffn: str = "mlp"
    d_ff: int | None = None
    norm: str = "layernorm"
    residual: bool = True
    position: str = "rope"
    context_length: int = 256
    dropout: float = 0.0
    tie_embeddings: bool = True
    causal: bool = True
    input: str = "tokens"
    input_dim: int | None = None
    vocab_size: int | None = None
    mixer_options: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        from seqlab.nn import FFNS, MIXERS, NORMS, POSITIONS

        for name, value in (("d_model", self.d_model), ("n_layers", self.n_layers),
                            ("n_heads", self.n_heads), ("context_length", self.context_length)):
            if value <= 0:
                raise ConfigError(f"model.{name} must be positive, got {value}")
        if isinstance(self.mixer, list) and len(self.mixer) != self.n_layers:
            raise ConfigError(f"model.mixer lists {len(self.mixer)} mixers but model.n_layers "
                              f"is {self.n_layers}; give one mixer per layer or a single name")
        for name in self.mixers:
            entry = _lookup(MIXERS, name, "model.mixer")
            if not entry.supports(self.causal):
                mode = "causal" if self.causal else "bidirectional"
                raise ConfigError(f"model.mixer {name!r} cannot run {mode} (model.causal is "
                                  f"{self.causal}); it supports: {', '.join(entry.modes)}")
        for name, options in self.mixer_options.items():
            if name not in MIXERS:
                raise ConfigError(f"model.mixer_options names unknown mixer {name!r}"
                                  f"{closest(name, MIXERS.names())}")
            convert(MIXERS.get(name).options, options, f"model.mixer_options.{name}", "config")
        if self.ffn != "none":
            _lookup(FFNS, self.ffn, "model.ffn")
        _lookup(NORMS, self.norm, "model.norm")
        _lookup(POSITIONS, self.position, "model.position")
        uses_heads = any(MIXERS.get(m).uses_positions for m in self.mixers)
        if uses_heads and self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by "
                              f"model.n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ConfigError(f"model.n_heads ({self.n_heads}) must be divisible by "
                              f"model.n_kv_heads ({self.n_kv_heads})")
        if self.position in ("rope", "alibi") and not uses_heads:
            raise ConfigError(f"model.position {self.position!r} acts inside attention, but no "
                              f"layer of {self.mixers} uses it; use 'none', 'sinusoidal' or 'learned'")
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise ConfigError(f"model.vocab_size must be positive, got {self.vocab_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.input not in ("tokens", "features"):
            raise ConfigError(f"model.input must be 'tokens' or 'features', got {self.input!r}")
        if self.input == "features" and not self.input_dim:
            raise ConfigError("model.input 'features' needs model.input_dim (feature size)")

    @property
    def mixers(self) -> list[str]:
        """One mixer name per layer."""
        return list(self.mixer) if isinstance(self.mixer, list) else [self.mixer] * self.n_layers


def _lookup(registry, name: str, key: str):
    try:
        return registry.get(name)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None


@dataclass
class TokenizerConfig:
    """``kind``: ``byte`` or ``char``; ``path``: reuse an existing tokenizer.json."""

    kind: str = "byte"
    path: str | None = None


@dataclass
class DataConfig:
    """Where the data is: a file, a folder, a glob, or a list of them.

    ``extensions`` keeps only files with these suffixes; ``exclude`` drops files any of
    whose path parts below the folder (or glob root) match one of these glob patterns.
    ``shuffle_files`` orders files by a seeded shuffle before they are joined, so the
    validation tail and a ``max_bytes`` cap sample the whole collection rather than the
    alphabetically last files.
    """

    path: Union[str, list[str], None] = None
    val_path: Union[str, list[str], None] = None
    val_fraction: float = 0.05
    extensions: list[str] | None = None
    exclude: list[str] | None = None
    max_bytes: int | None = None
    shuffle_files: bool = True

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {self.val_fraction}")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: str = "fp32"
    device: str = "auto"
    eval_every: int = 200
    eval_batches: int = 20
    log_every: int = 10
    save_every: int | None = None
    keep_checkpoints: int = 2
    num_threads: int | None = None
    # Flush denormal floats to zero on CPU while training (restored afterwards): gradients
    # fading through hundreds of recurrent steps go denormal, and x86 CPUs handle those
    # about 10x slower (measured on an LSTM trained on an end-scored task).
    flush_denormal: bool = True
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches",
                     "log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class RunConfig:
    """Everything one training run needs; written to ``RUN/config.yaml`` fully resolved.

    ``task_options`` holds the options of tasks other than causal_lm (each task checks
    its own keys), so a new task needs no new top-level section.
    """

    task: str = "causal_lm"
    task_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any, overrides: list[str] | dict | None = None,
                  *, source: str = "config") -> "RunConfig":
        """Build a config from plain data plus ``key.sub=value`` overrides."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of sections at the top level, "
                              f"got {type(data).__name__}")
        data = apply_overrides(data, overrides or [])
        data = resolve_preset(data)
        return convert(cls, data, "", source)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | dict | None = None) -> "RunConfig":
        return cls.from_dict(read_yaml(path), overrides, source=str(path))

    def replace(self, overrides: list[str] | dict) -> "RunConfig":
        """A copy with overrides applied (values re-validated)."""
        return RunConfig.from_dict(self.to_dict(), overrides)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {e.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from None


def apply_overrides(data: dict, overrides: list[str] | dict) -> dict:
    """Return a copy of ``data`` with dotted overrides set (``train.lr=1e-3``).

    Values are parsed as YAML scalars, so ``3``, ``true``, ``[a, b]`` and ``null`` work.
    """
    import copy

    data = copy.deepcopy(data)
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r} must look like key.sub=value")
            try:
                items.append((key.strip(), yaml.safe_load(value) if value.strip() else None))
            except yaml.YAMLError:
                items.append((key.strip(), value))
    for key, value in items:
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[:i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def resolve_preset(data: dict) -> dict:
    """Lay a named model preset under the user's explicit model keys."""
    model = data.get("model")
    if not isinstance(model, dict) or not model.get("preset"):
        return data
    from seqlab.models.presets import PRESETS

    preset = PRESETS.get(model["preset"])
    merged = {**preset.model, **{k: v for k, v in model.items()}}
    return {**data, "model": merged}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _check(tp: Any, value: Any, key: str, source: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _check(option, value, key, source)
            except ConfigError as e:
                errors.append(e)
        raise _type_error(tp, value, key, source)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(tp, value, key, source)
    if dataclasses.is_dataclass(tp):
        return convert(tp, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(tp, value, key, source)
        (item,) = typing.get_args(tp)
        return [_check(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(tp, value, key, source)
        _, item = typing.get_args(tp)
        return {str(k): _check(item, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise _type_error(tp, value, key, source)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" as a string (YAML 1.1)
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise _type_error(tp, value, key, source)


def _type_error(tp: Any, value: Any, key: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r} "
                       f"({type(value).__name__})")


def convert(cls: type, data: Any, prefix: str, source: str = "config"):
    """Build dataclass ``cls`` from a mapping, checking keys and value types."""
    where = prefix or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {data!r} "
                          f"({type(data).__name__})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise ConfigError(f"{source}: unknown config key {dotted!r}{closest(dotted, valid)}; "
                              f"valid keys here: {', '.join(names)}")
        kwargs[key] = _check(hints[key], value, dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if str(e).startswith(source):
            raise
        raise ConfigError(f"{source}: {e}") from None
