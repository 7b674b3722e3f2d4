"""Backbones, input adapters, heads, builders and named presets."""

from seqlab.models.backbone import Backbone, BackboneOutput, BackboneState
from seqlab.models.build import build_backbone
from seqlab.models.ctc_head import CTCHead
from seqlab.models.heads import HEADS, Head, LossSum, OutputHead
from seqlab.models.inputs import INPUTS
from seqlab.models.model import ModelOutput, SequenceModel
from seqlab.models.presets import PRESETS, Preset

__all__ = ["Backbone", "BackboneOutput", "BackboneState", "CTCHead", "HEADS", "Head", "INPUTS", "LossSum",
           "ModelOutput", "OutputHead", "PRESETS", "Preset", "SequenceModel", "build_backbone"]
