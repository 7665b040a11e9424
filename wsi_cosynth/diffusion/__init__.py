"""Noise schedules, Gaussian and categorical diffusion, the joint process and its samplers."""
