"""x4 super-resolution (VideoFactory Sec. 4): RCAN trained on Real-ESRGAN's second-order degradations of frames
decoded from the curation shards; upscales the 344x192 Swap-CA samples to 1376x768."""
