"""SDEdit and vanilla pair generation with diffusers video models (DenseDPO §3.2)."""
