"""Small, seeded demo data sets built from what every machine with Python has.

Each builder writes files in the formats seqlab's data sources read (JSON lines,
``.npz``, folders of ``.npy``) and returns a summary; nothing is downloaded. This
package sits at the bottom of the import graph: it needs only the standard library,
numpy, :mod:`seqlab.errors` and :mod:`seqlab.io`.
"""

from seqlab.datasets.dynamics import (DYNAMICS_CLASSES, make_dynamics, write_dynamics,
                                      write_dynamics_folders)
from seqlab.datasets.genes import (CODON_USAGE, REGIONS, Gene, Promoter, genomic_record,
                                   make_gene, make_promoter, promoter_strength,
                                   reverse_complement, write_gene_tagging,
                                   write_promoter_strength)
from seqlab.datasets.stdlib import (PACKAGE_EXCLUDE, STDLIB_EXCLUDE, TAGS, library_files,
                                    stdlib_dir, stdlib_packages, tag_source,
                                    write_package_snippets, write_token_tags)

__all__ = ["DYNAMICS_CLASSES", "PACKAGE_EXCLUDE", "STDLIB_EXCLUDE", "TAGS", "library_files",
           "make_dynamics", "stdlib_dir", "stdlib_packages", "tag_source", "write_dynamics",
           "write_dynamics_folders", "write_package_snippets", "write_token_tags"]
__all__ += ["CODON_USAGE", "REGIONS", "Gene", "Promoter", "genomic_record", "make_gene",
            "make_promoter", "promoter_strength", "reverse_complement", "write_gene_tagging",
            "write_promoter_strength"]
