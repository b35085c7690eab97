"""densedpo: dense, segment-level preference data and Flow-DPO training for video diffusion models."""

__version__ = "0.1.0"
