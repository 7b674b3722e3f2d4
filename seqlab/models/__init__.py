"""Backbones, output heads, builders and named presets."""

from seqlab.models.backbone import Backbone, BackboneOutput, BackboneState
from seqlab.models.build import OutputHead, build_backbone
from seqlab.models.presets import PRESETS, Preset

__all__ = ["Backbone", "BackboneOutput", "BackboneState", "OutputHead", "PRESETS", "Preset",
           "build_backbone"]
