"""Dense Flow-DPO training of video diffusion transformers (DenseDPO §3.4, Eq. 5/7, App. E)."""
