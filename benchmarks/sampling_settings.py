"""Sampling settings as the benchmarks take them on the command line, and what each costs.

A setting is ``steps:guidance[:lo-hi]`` (lo-hi: the guidance interval in t / (T - 1)), or
comma-separated KEY=VALUE pairs over a model's sampling settings: ``steps``, ``guidance``,
``sampler``, ``eta``, ``spacing``, ``final_label``, ``interval=lo-hi``; or ``own``. What a setting
leaves out is the model's own.
"""

from __future__ import annotations


def parse_setting(text: str, sample_config, *, sampler: str | None = None, eta: float | None = None):
    """A setting string (see the module docstring) -> the model's SampleConfig with it applied."""
    given: dict = {"sampler": sampler, "eta": eta}
    if text == "own":
        pass  # the model's own settings
    elif "=" in text:
        for part in text.split(","):
            key, value = part.split("=", 1)
            if key == "interval":
                given["guidance_interval"] = tuple(float(v) for v in value.split("-"))
            elif key in ("steps",):
                given[key] = int(value)
            elif key in ("guidance", "eta"):
                given[key] = float(value)
            else:
                given[key] = value
    else:
        parts = text.split(":")
        given["steps"], given["guidance"] = int(float(parts[0])), float(parts[1])
        if len(parts) > 2:
            given["guidance_interval"] = tuple(float(v) for v in parts[2].split("-"))
    return sample_config.with_overrides(**given)


def network_passes(settings, num_steps: int) -> int:
    """Denoiser passes per tile: one per step, two where guidance applies (a doubled batch)."""
    from wsi_cosynth.diffusion.schedules import strided_timesteps

    lo, hi = settings.guidance_interval
    guided = 0 if settings.guidance == 1.0 else sum(lo <= t / (num_steps - 1) <= hi for t in
                                                     strided_timesteps(num_steps, settings.steps, settings.spacing))
    return settings.steps + guided
