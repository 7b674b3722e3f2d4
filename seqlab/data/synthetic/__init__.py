"""Synthetic long-range tasks (see ``base`` for the conventions every generator shares).

Importing the package registers every generator in ``SYNTHETIC``.
"""

from seqlab.data.synthetic.base import (IGNORE, SYNTHETIC, SyntheticBatch, SyntheticGenerator,
                                        build_generator)
from seqlab.data.synthetic.recall import MQAR, Copy, Induction, SelectiveCopy
from seqlab.data.synthetic.structure import LISTOPS_OPS, Adding, ListOps, listops_value

__all__ = ["Adding", "Copy", "IGNORE", "Induction", "LISTOPS_OPS", "ListOps", "MQAR", "SYNTHETIC",
           "SelectiveCopy", "SyntheticBatch", "SyntheticGenerator", "build_generator",
           "listops_value"]
