"""SynthCaps: the project's own captioned-audio data set generator.

`generate(out_dir, clips, ...)` writes clips of 1-4 synthetic sound events (24 types with distinct spectral
and temporal signatures) with five captions each that describe order, overlap, attributes and counts, in the
Clotho, AudioCaps or WavCaps layout.  Clips come in hard-negative groups that share their bag of events.
"""
from .captions import caption_for_events, caption_for_scene, scene_captions
from .events import ATTRIBUTE_VALUES, EVENT_TYPES, EventSpec, event_length, render_event
from .scenes import EventInstance, Scene, layout_scene, make_group, render_scene, sample_scene
from .writer import LAYOUTS, VERSION, generate

__all__ = [
    "ATTRIBUTE_VALUES", "EVENT_TYPES", "EventInstance", "EventSpec", "LAYOUTS", "Scene", "VERSION",
    "caption_for_events", "caption_for_scene", "event_length", "generate", "layout_scene", "make_group",
    "render_event", "render_scene", "sample_scene", "scene_captions",
]
