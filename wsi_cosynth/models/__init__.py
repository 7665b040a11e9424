"""The denoiser U-Net, the RRDB point-map encoder, text encoders and typed configs."""
