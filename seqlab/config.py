"""Typed run configs: dataclasses that check themselves, YAML files and dotted overrides.

A config is read as plain data (YAML), overridden with ``key.sub=value`` pairs, the
objective's model defaults and a model preset (if named) are merged under the user's
keys (deeply: one nested override keeps the preset's other nested keys), and the result
is converted section by section into dataclasses. ``task_options`` are the objective's
own options and ``data`` the chosen data source's, each converted with its registered
dataclass, so unknown keys and wrong types fail here, before any data is read, with the
closest valid key named.

This module composes the registries of the layers below it (mixers, inputs, data
sources, objectives); none of them imports it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seqlab.config_sections import (InitConfig, LoraConfig, ModelConfig, ParamGroup,
                                   TokenizerConfig, TrainConfig)
from seqlab.data import DATA_SOURCES
from seqlab.data.text_source import TextOptions
from seqlab.errors import ConfigError
from seqlab.models.presets import PRESETS
from seqlab.nn import MIXERS
from seqlab.registry import closest
from seqlab.tasks import OBJECTIVES
from seqlab.typed import _check, convert

DataConfig = TextOptions  # the options of the default (text) source

__all__ = ["DataConfig", "InitConfig", "LoraConfig", "ModelConfig", "ParamGroup", "RunConfig",
           "TokenizerConfig", "TrainConfig", "apply_overrides", "convert", "deep_merge", "read_yaml"]


SECTIONS = ("task", "task_options", "seed", "model", "tokenizer", "data", "train", "init", "lora")


@dataclass
class RunConfig:
    """Everything one training run needs; written to ``RUN/config.yaml`` fully resolved.

    ``task`` names the objective; ``task_options`` are its options and ``data`` the
    options of its data source (``data.source``, default: the objective's first), each a
    dataclass of the registered component.
    """

    task: str = "causal_lm"
    task_options: Any = None
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    init: InitConfig = field(default_factory=InitConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self):
        entry = OBJECTIVES.get(self.task)
        if self.task_options is None:
            self.task_options = entry.options()
        if self.data is None:
            self.data = DATA_SOURCES.get(entry.sources[0]).options(source=entry.sources[0])

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to_dict"):
                value = value.to_dict()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            out[f.name] = value
        return out

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
        data = upgrade_legacy(apply_overrides(data, overrides or []))
        for key in data:
            if key not in SECTIONS:
                raise ConfigError(f"{source}: unknown config key {key!r}{closest(key, SECTIONS)}; "
                                  f"valid keys here: {', '.join(SECTIONS)}")
        task = _check(str, data.get("task", "causal_lm"), "task", source)
        try:
            entry = OBJECTIVES.get(task)
        except ConfigError as e:
            raise ConfigError(f"{source}: task: {e}") from None
        model = resolve_model(data.get("model"), entry.model_defaults, source)
        _check_mode(task, entry, model, source)
        config = cls(
            task=task,
            task_options=parse_task_options(task, entry, data.get("task_options"), source),
            seed=_check(int, data.get("seed", 0), "seed", source),
            model=convert(ModelConfig, model, "model", source),
            tokenizer=convert(TokenizerConfig, data.get("tokenizer"), "tokenizer", source),
            data=parse_data(task, entry, data.get("data"), source),
            train=convert(TrainConfig, data.get("train"), "train", source),
            init=convert(InitConfig, data.get("init"), "init", source),
            lora=convert(LoraConfig, data.get("lora"), "lora", source),
        )
        _check_combination(config, entry, source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | dict | None = None) -> "RunConfig":
        return cls.from_dict(read_yaml(path), overrides, source=str(path))

    def replace(self, overrides: list[str] | dict) -> "RunConfig":
        """A copy with overrides applied (values re-validated)."""
        return RunConfig.from_dict(self.to_dict(), overrides)

    def copy(self) -> "RunConfig":
        """An independent copy (training fills derived values into its own copy)."""
        return copy.deepcopy(self)


def parse_task_options(task: str, entry, raw: Any, source: str):
    """The objective's options from ``task_options`` (its own parser, or its dataclass)."""
    parser = getattr(entry.cls, "parse_options", None)
    if parser is not None:
        return parser(raw if raw is not None else {}, source)
    if raw and not dataclasses.fields(entry.options):
        keys = ", ".join(map(str, raw)) if isinstance(raw, dict) else repr(raw)
        raise ConfigError(f"{source}: task {task!r} takes no task_options, got: {keys}")
    return convert(entry.options, raw, "task_options", source)


def parse_data(task: str, entry, raw: Any, source: str):
    """The data source's options: ``data.source`` (default: the objective's first)
    picks the dataclass the other keys are converted with."""
    raw = dict(raw or {}) if isinstance(raw, dict) or raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: data must be a mapping, got {raw!r}")
    name = raw.get("source") or entry.sources[0]
    if name not in entry.sources:
        known = f"{closest(name, DATA_SOURCES.names())}" if name not in DATA_SOURCES else ""
        raise ConfigError(f"{source}: data.source {name!r}{known} cannot feed task {task!r}; "
                          f"it reads: {', '.join(entry.sources)}")
    return convert(DATA_SOURCES.get(name).options, {**raw, "source": name}, "data", source)


def resolve_model(raw: Any, defaults: dict, source: str) -> Any:
    """The objective's defaults, then the named preset, then the user's keys, merged
    deeply. Preset and default ``mixer_options`` of mixers the model does not use are
    dropped; the user's own are kept (and refused later if unused)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw  # convert() names the problem
    base = copy.deepcopy(defaults)
    if raw.get("preset"):
        try:
            preset = PRESETS.get(raw["preset"])
        except ConfigError as e:
            raise ConfigError(f"{source}: model.preset: {e}") from None
        base = deep_merge(base, preset.model)
    merged = deep_merge(base, raw)
    mixer = merged.get("mixer", ModelConfig.mixer)
    used = set(mixer) if isinstance(mixer, list) else {mixer}
    options = merged.get("mixer_options")
    if isinstance(options, dict):
        mine = raw.get("mixer_options") if isinstance(raw.get("mixer_options"), dict) else {}
        merged["mixer_options"] = {k: v for k, v in options.items() if k in used or k in mine}
    return merged


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` laid over ``base``; nested mappings merge key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_mode(task: str, entry, model: Any, source: str) -> None:
    """Refuse, before the model config is built, an objective whose mode the model or
    its mixers cannot run, naming the mixers that can."""
    if not isinstance(model, dict):
        return
    causal = model.get("causal", ModelConfig.causal)
    if not isinstance(causal, bool):
        return  # ModelConfig names the wrong type
    mode = "causal" if causal else "bidirectional"
    able = ", ".join(n for n in MIXERS if mode in MIXERS.get(n).modes)
    if mode not in entry.modes:
        wanted = entry.modes[0]
        able = ", ".join(n for n in MIXERS if wanted in MIXERS.get(n).modes)
        raise ConfigError(f"{source}: task {task!r} needs a {wanted} model (model.causal: "
                          f"{str(wanted == 'causal').lower()}); mixers that can run {wanted}: {able}")
    mixer = model.get("mixer", ModelConfig.mixer)
    for name in mixer if isinstance(mixer, list) else [mixer]:
        if isinstance(name, str) and name in MIXERS and mode not in MIXERS.get(name).modes:
            raise ConfigError(f"{source}: task {task!r} runs the model {mode}, but model.mixer "
                              f"{name!r} runs only {', '.join(MIXERS.get(name).modes)}; mixers "
                              f"that can run {mode}: {able}")


def _check_combination(config: RunConfig, entry, source: str) -> None:
    """Cross-section checks: the tokenizer fits the data, and the objective's own checks."""
    if getattr(config.data, "tokens_field", None) and config.tokenizer.kind != "ids":
        raise ConfigError(f"{source}: data.tokens_field gives token ids; set tokenizer.kind: ids "
                          f"(it is {config.tokenizer.kind!r})")
    check = getattr(entry.cls, "check", None)
    if check is not None:
        try:
            check(config)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


def upgrade_legacy(data: dict) -> dict:
    """Read configs written before data sources existed: a ``synthetic`` run kept its
    generator in ``task_options`` and wrote the text defaults under ``data``."""
    old = data.get("data")
    if data.get("task") == "synthetic" and (old is None or (isinstance(old, dict) and "source" not in old)):
        text = {f.name: f.default for f in dataclasses.fields(TextOptions)
                if f.default is not dataclasses.MISSING}
        if old is None or all(k in text and v == text[k] for k, v in old.items()):
            data = {**data, "data": {"source": "synthetic"}}
    return data


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
