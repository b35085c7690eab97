"""Segment-level VLM preference labeling of aligned video pairs (DenseDPO §3.3).

Imports no torch and no diffusers: it talks to a VLM over HTTP.
"""
