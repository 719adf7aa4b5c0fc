"""VideoFactory's models trained on the curation shards: the Swap-CA latent video diffusion model, the x4
RCAN super-resolution model, and FVD/CLIPSIM evaluation. Reads the shards through `hdvg.contract`;
curation never imports this package."""
