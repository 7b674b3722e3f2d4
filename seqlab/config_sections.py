"""The sections of a run config: model, tokenizer, training and initialisation.

Each is a dataclass that checks itself against the registries of the components it
names (mixers, positions, norms, feed-forwards, input adapters, tokenizers).
``seqlab.config`` composes them into a ``RunConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from seqlab.data.tokenizers import TOKENIZERS
from seqlab.errors import ConfigError
from seqlab.models.inputs import INPUTS
from seqlab.models.lora import DEFAULT_TARGETS as LORA_TARGETS
from seqlab.nn import FFNS, MIXERS, NORMS, POSITIONS
from seqlab.registry import closest
from seqlab.typed import convert


@dataclass
class ModelConfig:
    """Architecture: ``embed -> n_layers x Block(mixer, ffn) -> norm -> head``.

    ``mixer`` is one registry key or a list of one key per layer (hybrid stacks).
    ``mixer_options`` maps a mixer the model uses to its own options (e.g.
    ``lstm: {num_layers: 2}``). ``input`` names the input adapter (``tokens``,
    ``features``); left unset, the data source decides, and ``vocab_size`` or
    ``input_dim`` come from the tokenizer or the data.
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
    input: str | None = None
    input_dim: int | None = None
    vocab_size: int | None = None
    mixer_options: dict[str, dict] = field(default_factory=dict)
    # Details that imported checkpoints fix: the mlp's GELU (gelu or gelu_tanh), the
    # norms' epsilon (None: torch's default), and the rotary base.
    activation: str = "gelu"
    norm_eps: float | None = None
    rope_base: float = 10000.0
    # BERT's layout: "post" normalises after each residual sum (and drops the final
    # norm); embed_norm normalises the embedding output.
    norm_position: str = "pre"
    embed_norm: bool = False
    # Rotary positions beyond the trained context: "linear" (position interpolation) or
    # "ntk" (NTK-aware base scaling) by rope_factor.
    rope_scaling: str = "none"
    rope_factor: float = 1.0
    # Feature inputs: this many consecutive steps per position (patches; 1 = none).
    patch: int = 1
    # Encoder-decoder models (seq2seq objectives): the keys above describe the decoder;
    # ``encoder`` overrides any of them for the encoder stack (bidirectional unless it
    # says causal: true), and ``cross_attention`` is the decoder's score over the
    # encoder's outputs: dot (multi-head, the Transformer's and Luong's) or additive
    # (Bahdanau's).
    encoder: dict | None = None
    cross_attention: str = "dot"
    # Token embeddings times sqrt(d_model) before positions are added (the original
    # Transformer's and Marian's).
    scale_embedding: bool = False

    def __post_init__(self):
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
            if name not in self.mixers:
                used = sorted(set(self.mixers))
                raise ConfigError(f"model.mixer_options.{name} is unused: the model's mixers are "
                                  f"{', '.join(used)}; valid keys: {', '.join(used)}")
            convert(MIXERS.get(name).options, options, f"model.mixer_options.{name}", "config")
        if self.ffn != "none":
            _lookup(FFNS, self.ffn, "model.ffn")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise ConfigError(f"model.activation must be 'gelu' or 'gelu_tanh', got {self.activation!r}")
        if self.activation != "gelu" and self.ffn != "mlp":
            raise ConfigError(f"model.activation applies to the mlp ffn; this model's ffn is "
                              f"{self.ffn!r}")
        if self.norm_eps is not None and self.norm_eps <= 0:
            raise ConfigError(f"model.norm_eps must be positive, got {self.norm_eps}")
        if self.norm_position not in ("pre", "post"):
            raise ConfigError(f"model.norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if self.norm_position == "post" and (not self.residual or self.norm == "none"):
            raise ConfigError("model.norm_position 'post' normalises residual sums: it needs "
                              "model.residual true and a model.norm")
        if self.rope_scaling not in ("none", "linear", "ntk"):
            raise ConfigError(f"model.rope_scaling must be none, linear or ntk, got {self.rope_scaling!r}")
        if self.patch < 1:
            raise ConfigError(f"model.patch must be >= 1, got {self.patch}")
        if self.rope_factor < 1:
            raise ConfigError(f"model.rope_factor must be >= 1, got {self.rope_factor}")
        if (self.rope_scaling != "none" or self.rope_factor != 1) and self.position != "rope":
            raise ConfigError(f"model.rope_scaling and model.rope_factor act on rotary positions; "
                              f"model.position is {self.position!r}")
        if self.rope_base <= 1:
            raise ConfigError(f"model.rope_base must be above 1, got {self.rope_base}")
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
        if self.input is not None:
            _lookup(INPUTS, self.input, "model.input")
        if self.input_dim is not None and self.input_dim <= 0:
            raise ConfigError(f"model.input_dim must be positive, got {self.input_dim}")
        if self.cross_attention not in ("dot", "additive"):
            raise ConfigError(f"model.cross_attention must be 'dot' or 'additive', got "
                              f"{self.cross_attention!r}")
        if self.encoder is not None:
            if not isinstance(self.encoder, dict):
                raise ConfigError(f"model.encoder must be a mapping of model keys, got {self.encoder!r}")
            if not self.causal:
                raise ConfigError("model.causal must be true for an encoder-decoder: the decoder "
                                  "generates left to right (set the encoder's mode in model.encoder)")
            self.encoder_config()

    def encoder_config(self) -> "ModelConfig":
        """The encoder's config: this one with ``encoder``'s keys laid over it."""
        from dataclasses import fields

        own = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("encoder", "cross_attention", "preset")}
        overrides = dict(self.encoder or {})
        unknown = sorted(set(overrides) - set(own))
        if unknown:
            raise ConfigError(f"model.encoder has unknown keys {', '.join(unknown)}; valid: "
                              f"{', '.join(sorted(own))}")
        if "mixer" in overrides and "n_layers" not in overrides and isinstance(overrides["mixer"], list):
            overrides["n_layers"] = len(overrides["mixer"])
        if "mixer" in overrides and "mixer_options" not in overrides:
            used = set(overrides["mixer"] if isinstance(overrides["mixer"], list) else [overrides["mixer"]])
            own["mixer_options"] = {k: v for k, v in self.mixer_options.items() if k in used}
        if "mixer" in overrides and "position" not in overrides:
            names = overrides["mixer"] if isinstance(overrides["mixer"], list) else [overrides["mixer"]]
            uses = any(MIXERS.get(m).uses_positions for m in names if m in MIXERS)
            if self.position in ("rope", "alibi") and not uses:
                own["position"] = "none"
            elif self.position == "none" and uses:
                own["position"] = "rope"  # an attention encoder under a recurrent decoder
        if "d_model" in overrides and overrides["d_model"] != self.d_model:
            raise ConfigError(f"model.encoder.d_model ({overrides['d_model']}) must equal "
                              f"model.d_model ({self.d_model}): the decoder attends to the "
                              "encoder's outputs at its own width")
        own.update(causal=False)
        own.update(overrides)
        try:
            return ModelConfig(**own)
        except ConfigError as e:
            raise ConfigError(str(e).replace("model.", "model.encoder.")) from None

    @property
    def shares_vocabulary(self) -> bool:
        """Whether the encoder reads the decoder's vocabulary (one tokenizer)."""
        if {"vocab_size", "input", "input_dim"} & set(self.encoder or {}):
            return False
        return (self.input or "tokens") == "tokens"  # not speech frames

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
    """``kind``: ``byte`` (UTF-8 bytes), ``char`` (the corpus's characters), ``ids``
    (pre-tokenised data), ``bpe`` (byte-level BPE trained on the training text to
    ``vocab_size`` ids), ``protein``, ``dna``, ``rna`` (residues and nucleotides) or
    ``kmer`` (DNA k-mers); ``path``: reuse an existing tokenizer.json (a bpe one from
    ``seqlab tokenizer train``)."""

    kind: str = "byte"
    path: str | None = None
    vocab_size: int | None = None  # bpe
    word_chars: int | None = None  # bpe: words of this many characters (DNA; caps memory)
    k: int | None = None  # kmer: bases per k-mer (default 3)
    overlap: bool | None = None  # kmer: one k-mer per position instead of every k bases
    soft_mask: bool | None = None  # dna, rna: lowercase keeps ids of its own

    OPTIONS = {"vocab_size": ("bpe",), "word_chars": ("bpe",), "k": ("kmer",), "overlap": ("kmer",),
               "soft_mask": ("dna", "rna")}

    def __post_init__(self):
        _lookup(TOKENIZERS, self.kind, "tokenizer.kind")
        for key, kinds in self.OPTIONS.items():
            if getattr(self, key) is not None and self.kind not in kinds:
                raise ConfigError(f"tokenizer.{key} applies to kind {' or '.join(kinds)}, not "
                                  f"{self.kind!r}")

    def options(self) -> dict:
        """The kind's own options that the config sets (what ``build`` takes)."""
        return {key: getattr(self, key) for key in self.OPTIONS if getattr(self, key) is not None}


@dataclass
class ParamGroup:
    """Parameters (glob patterns over their names, e.g. ``backbone.blocks.0.*``) that train
    with their own learning rate (``lr``, or ``lr_scale`` times ``train.lr``) and weight
    decay. A parameter belongs to the first group whose pattern matches it."""

    params: list[str] = field(default_factory=list)
    lr: float | None = None
    lr_scale: float | None = None
    weight_decay: float | None = None

    def __post_init__(self):
        if not self.params:
            raise ConfigError("train.param_groups: each group needs params (name patterns)")
        if self.lr is not None and self.lr_scale is not None:
            raise ConfigError("train.param_groups: give lr or lr_scale, not both")
        for key in ("lr", "lr_scale"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"train.param_groups: {key} must be positive, got {value}")


@dataclass
class TrainConfig:
    """How to train. ``eval_batches``: at most this many batches per evaluation while
    training (None: the data source's default: every held-out example, or 20 batches of
    text blocks). ``best_metric``: the validation metric that picks the weights a run
    keeps in ``model.safetensors`` (default ``val_loss``; e.g. ``accuracy`` for a
    classifier whose loss rises from overconfidence while its accuracy still improves);
    the objective says whether higher or lower is better. ``freeze``: glob patterns of
    parameter names that stay fixed. ``param_groups``: parameters with their own learning
    rate or weight decay (see ``ParamGroup``)."""

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
    eval_batches: int | None = None
    best_metric: str = "val_loss"
    log_every: int = 10
    save_every: int | None = None
    keep_checkpoints: int = 2
    num_threads: int | None = None
    # Flush denormal floats to zero on CPU while training (restored afterwards): gradients
    # fading through hundreds of recurrent steps go denormal, and x86 CPUs handle those
    # about 10x slower (measured on an LSTM trained on an end-scored task).
    flush_denormal: bool = True
    progress: bool = True
    tensorboard: bool = False  # metrics also as TensorBoard scalars in RUN/tensorboard/
    # Recompute each block's activations in backward instead of keeping them: memory that
    # no longer grows with depth, for about one more forward pass. The same gradients.
    activation_checkpointing: bool = False
    # Seconds the ranks of a torchrun job wait for each other: to form the process group,
    # in a collective, and while rank 0 evaluates or saves.
    dist_timeout: float = 1800.0
    # torch.compile the training step's forward and backward (compile_backend: inductor
    # generates fused kernels; aot_eager only captures the graph). Evaluation stays eager.
    compile: bool = False
    compile_backend: str = "inductor"
    # Under torchrun: shard parameters, gradients and optimizer state over the ranks
    # (FSDP2, one unit per block) instead of keeping a whole copy on each (DDP).
    fsdp: bool = False
    freeze: list[str] = field(default_factory=list)
    param_groups: list[ParamGroup] = field(default_factory=list)
    # Layer-wise rate decay: each layer trains at layer_decay ** (its distance from the
    # head) of its rate; 1 turns it off.
    layer_decay: float = 1.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches",
                     "log_every", "keep_checkpoints"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"train.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.compile_backend not in ("inductor", "aot_eager", "eager"):
            raise ConfigError(f"train.compile_backend must be inductor, aot_eager or eager, got "
                              f"{self.compile_backend!r}")
        if self.dist_timeout <= 0:
            raise ConfigError(f"train.dist_timeout must be positive seconds, got {self.dist_timeout}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class LoraConfig:
    """LoRA fine-tuning (``rank`` 0: off). Adapters of ``rank`` with ``alpha`` (scale
    alpha / rank) and ``dropout`` go on the Linear modules matching ``targets``; besides
    them only the parameters matching ``train`` (the new head) train. Needs ``init.run``:
    the run saves only what trained, and names that base run."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    train: list[str] = field(default_factory=lambda: ["head.*"])

    def __post_init__(self):
        if self.rank < 0 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"lora: rank must be >= 0, alpha > 0 and dropout in [0, 1), got "
                              f"{self.rank}, {self.alpha}, {self.dropout}")
        if self.rank and not self.targets:
            raise ConfigError("lora.targets is empty: name the Linear modules to adapt")


@dataclass
class InitConfig:
    """Initialise a new run from a trained one (fine-tuning).

    ``run``: the run directory whose ``model.safetensors`` is read. ``include`` and
    ``exclude``: glob patterns of tensor names to take or leave (default: every tensor
    whose name and shape match, e.g. ``exclude: ["head.*"]`` keeps a backbone and builds
    a new head). ``penalty``: weight of an L2 penalty pulling the loaded tensors toward
    their loaded values (L2-SP, Li et al. 2018), added to every step's loss.
    What was loaded, what is new and what was dropped is logged and written to the run's
    ``init.json``.
    """

    run: str | None = None
    include: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    penalty: float = 0.0
    # Evaluate the init run's own objective on its own validation data before and during
    # training: the rise of its loss is reported as forgetting (pretrain/forgetting).
    measure_forgetting: bool = True
    # Mitigations: replay (the weight of the init objective's loss on its own training
    # batches, added to every step) and EWC (the weight of a Fisher-weighted pull toward
    # the loaded weights; the Fisher over ewc_batches of the init run's data).
    replay: float = 0.0
    ewc: float = 0.0
    ewc_batches: int = 8

    def __post_init__(self):
        if self.replay < 0 or self.ewc < 0 or self.ewc_batches < 1:
            raise ConfigError(f"init.replay and init.ewc must be >= 0 and init.ewc_batches >= 1, "
                              f"got {self.replay}, {self.ewc}, {self.ewc_batches}")
        if self.penalty < 0:
            raise ConfigError(f"init.penalty must be >= 0, got {self.penalty}")
