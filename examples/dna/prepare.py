"""Write this example's data: synthetic genomic DNA whose genes carry real signals
(promoter boxes, start and stop codons, codon usage, splice sites, polyadenylation
signals; see ``seqlab.datasets.genes``) as FASTA with a companion FASTA of per-base
regions (E coding exon, I intron, U UTR, O outside genes), and promoters aligned at the
transcription start whose expression follows their TATA and CAAT boxes, as FASTA with a
CSV of expression values.

Usage (from the repository root): ``python examples/dna/prepare.py [--small]``.
"""

import argparse
from pathlib import Path

from seqlab.datasets.genes import write_gene_tagging, write_promoter_strength

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few dozen records (for tests)")
    parser.add_argument("--out", default=str(HERE / "data"))
    args = parser.parse_args()
    genes, promoters = ((40, 12), (120, 40)) if args.small else ((1000, 200), (4000, 500))
    out = Path(args.out)
    counts = write_gene_tagging(out / "genes", n_train=genes[0], n_val=genes[1])
    print(f"genomic DNA: {counts['train']} training and {counts['val']} validation records "
          f"holding {counts['genes']} genes, in {out / 'genes'}")
    counts = write_promoter_strength(out / "promoters", n_train=promoters[0], n_val=promoters[1])
    print(f"promoters: {counts['train']} training and {counts['val']} validation, in "
          f"{out / 'promoters'}")


if __name__ == "__main__":
    main()
