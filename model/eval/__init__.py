"""Evaluation by VideoFactory's protocol (appendix D.3): FVD (I3D features, Frechet distance), CLIPSIM
(CLIP ViT-B/32 image-text cosine similarity), the prompt sets, and `hdvg eval`, which generates and scores."""
