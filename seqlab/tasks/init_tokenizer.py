"""The tokenizer of a run started from another run (fine-tuning, ``init.run``).

A model initialised from a run reads that run's token ids, so it takes that run's
tokenizer; a config that names another one is refused here, whichever way the run was
started (``seqlab finetune --from`` or ``init.run`` in the config).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from seqlab.config_sections import TokenizerConfig
from seqlab.data.tokenizer_base import Tokenizer, load_tokenizer
from seqlab.errors import ConfigError
from seqlab.rundir import CONFIG_FILE, TOKENIZER_FILE


def check_base_tokenizer(mine: TokenizerConfig, from_run: str | Path) -> None:
    """Fine-tuning reads the base run's token ids, so it always takes the base run's
    tokenizer: a config that leaves ``tokenizer`` at its default gets it; one that names
    a tokenizer (kind, options or ``tokenizer.path``) must name the same one.

    Raises:
        ConfigError: the config's tokenizer is not the base run's, naming both.
    """
    path = Path(from_run) / TOKENIZER_FILE
    if mine == TokenizerConfig() or not path.is_file():  # nothing named, or a features run
        return
    base = load_tokenizer(path)
    if mine.path is not None:
        other = load_tokenizer(mine.path)
        if _same_ids(other, base):
            return
        wanted = f"tokenizer.path {mine.path}: {_describe(other)}"
    else:
        run_config = yaml.safe_load((Path(from_run) / CONFIG_FILE).read_text(encoding="utf-8"))
        built = (run_config or {}).get("tokenizer") or {}
        given = mine.options()
        if mine.kind == base.kind and all(value == _base_option(key, built, base)
                                          for key, value in given.items()):
            return
        wanted = ", ".join([f"kind {mine.kind}"] + [f"{k}={v}" for k, v in given.items()])
    raise ConfigError(f"the config's tokenizer ({wanted}) is not the one the base run {from_run} "
                      f"was trained with ({_describe(base)}, {path}); fine-tuning reads the base "
                      "run's token ids with its tokenizer: leave tokenizer out of the config")


def _base_option(key: str, built: dict, base: Tokenizer):
    """A tokenizer option of the base run: as its config set it, else as its tokenizer has it
    (a kmer tokenizer's ``k`` when the config left the default)."""
    value = built.get(key)
    return value if value is not None else getattr(base, key, None)


def _same_ids(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers give the same ids (one may have more specials at the end,
    e.g. the <mask> a masked LM adds)."""
    da, db = a.to_dict(), b.to_dict()
    sa, sb = da.pop("special_tokens", []), db.pop("special_tokens", [])
    return da == db and (sa == sb[:len(sa)] or sb == sa[:len(sb)])


def _describe(tokenizer: Tokenizer) -> str:
    options = [f"{key}={getattr(tokenizer, key)}" for key in ("k", "overlap", "soft_mask")
               if hasattr(tokenizer, key)]
    return ", ".join([f"kind {tokenizer.kind}", *options, f"{tokenizer.vocab_size} ids"])
