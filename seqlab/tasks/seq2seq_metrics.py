"""What a sequence-to-sequence output is scored by: BLEU and chrF (through sacrebleu),
exact match, and error rates by edit distance over tokens (characters for a char
tokenizer: phoneme error rate for grapheme-to-phoneme) and over words (WER)."""

from __future__ import annotations

from seqlab.errors import ConfigError


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def error_rate(hypotheses: list, references: list) -> float:
    """Summed edit distance over summed reference length (each item a sequence)."""
    total = sum(len(r) for r in references)
    return sum(edit_distance(h, r) for h, r in zip(hypotheses, references)) / max(total, 1)


def error_counts(hypotheses: list[str], references: list[str]) -> tuple[int, int, int, int]:
    """Word errors, reference words, character errors and reference characters (jiwer's
    substitutions + deletions + insertions), for corpus-level rates."""
    try:
        import jiwer
    except ImportError:
        raise ConfigError("speech metrics need jiwer: pip install jiwer") from None
    pairs = [(h, r) for h, r in zip(hypotheses, references) if r.strip()]
    if not pairs:
        return 0, 0, 0, 0
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)

    def errors(out) -> tuple[int, int]:
        return (out.substitutions + out.deletions + out.insertions,
                out.substitutions + out.deletions + out.hits)

    return (*errors(words), *errors(chars))


def text_scores(hypotheses: list[str], references: list[str],
                token_hyps: list[list[int]], token_refs: list[list[int]], *,
                bleu_tokenize: str = "13a") -> dict[str, float]:
    """``bleu`` and ``chrf`` (corpus level, 0-100; BLEU over sacrebleu's ``bleu_tokenize``
    tokens: ``13a`` words for sentences, ``char`` for single words such as
    pronunciations), ``exact`` (fraction of outputs equal to their reference), ``ter``
    (token error rate), and ``wer`` and ``cer`` (word and character error rates, through
    jiwer)."""
    try:
        import sacrebleu
    except ImportError:
        raise ConfigError("seq2seq metrics need sacrebleu: pip install sacrebleu") from None
    if not references:
        return {}
    we, wn, ce, cn = error_counts(hypotheses, references)
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=bleu_tokenize)
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {
        "bleu": float(bleu.score),
        "chrf": float(chrf.score),
        "exact": sum(h == r for h, r in zip(hypotheses, references)) / len(references),
        "ter": error_rate(token_hyps, token_refs),
        "wer": we / max(wn, 1),
        "cer": ce / max(cn, 1),
    }


DIRECTIONS = {"bleu": "max", "chrf": "max", "exact": "max", "ter": "min", "wer": "min",
              "cer": "min", "token_accuracy": "max"}

__all__ = ["DIRECTIONS", "edit_distance", "error_counts", "error_rate", "text_scores"]
