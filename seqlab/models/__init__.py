"""Backbones, output heads, builders and named presets."""

from seqlab.models.backbone import Backbone, BackboneOutput, BackboneState
from seqlab.models.build import OutputHead, build_backbone
from seqlab.models.model import ModelOutput, SequenceModel
from seqlab.models.presets import PRESETS, Preset

__all__ = ["Backbone", "BackboneOutput", "BackboneState", "ModelOutput", "OutputHead", "PRESETS",
           "Preset", "SequenceModel", "build_backbone"]
