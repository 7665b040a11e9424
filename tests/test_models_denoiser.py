"""The conditional denoiser and CosynthModel: gradients, seeded sampling, guidance, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_cosynth.diffusion.joint import JointState
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.models.config import CosynthConfig, load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.records import Layout, Provenance
from wsi_cosynth.taxonomy import get_taxonomy


pytestmark = pytest.mark.usefixtures("torch_one_thread")

TAX = get_taxonomy("consep")


def _model(seed: int = 0, **model_over) -> CosynthModel:
    cfg = load_config("tiny")
    if model_over:
        cfg = CosynthConfig.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], **model_over}})
    torch.manual_seed(seed)
    return CosynthModel(cfg, TAX, mpp=0.25)


def _layout(n: int = 6, seed: int = 0, size: int = 32) -> Layout:
    rng = np.random.default_rng(seed)
    return Layout(rng.uniform(0, size, (n, 2)), rng.integers(1, 5, n), (size, size), TAX,
                  Provenance(name=f"l{seed}", tissue="colon"))


def test_presets_validate_and_unknown_keys_fail(tmp_path):
    for name in ("tiny", "cpu-small", "cpu-small-v", "paper-256"):
        assert load_config(name).name == name
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {channelz: 3}\n")
    with pytest.raises(CosynthError, match="channelz"):
        load_config(bad)
    with pytest.raises(CosynthError, match="preset"):
        load_config("no-such-preset")


@pytest.mark.parametrize("model, needle", [
    ({"channels": 36, "channel_mults": [2, 4], "groups": 8}, "width 36.*groups"),  # the stem's width
    ({"channels": 32, "channel_mults": [1, 3], "num_heads": 5, "groups": 8}, "num_heads"),
    ({"full_res_channels": 12, "groups": 8}, "full_res_channels 12"),
])
def test_widths_that_would_break_the_network_are_config_errors(model, needle):
    data = load_config("tiny").to_dict()
    data["model"].update(model)
    with pytest.raises(CosynthError, match=needle):
        CosynthConfig.from_dict(data)


def test_gradients_reach_every_parameter():
    m = _model(unshuffle=2)  # exercise the pixel-unshuffle stem too
    gen = torch.Generator().manual_seed(0)
    b = 3
    x0 = JointState(torch.rand(b, 3, 32, 32) * 2 - 1, torch.rand(b, 1, 32, 32) * 2 - 1, torch.randint(0, 5, (b, 32, 32)))
    points = torch.zeros(b, 32, 32, dtype=torch.long)
    points[:, 5, 7], points[:, 20, 3], points[:, 9, 30], points[:, 25, 25] = 1, 2, 3, 4
    prompts = ["high-quality histopathology colon tissue image including nuclei types of spindle"] * b
    losses = m.training_losses(x0, points, prompts, torch.tensor([True, True, False]), gen)
    losses["total"].backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        if name == "text_encoder.embedding.weight":  # only rows of words in the prompt get gradient
            continue
        assert p.grad.abs().sum() > 0, name
    assert m.text_encoder.embedding.weight.grad.abs().sum() > 0


def _batch(b: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0 = JointState(torch.rand(b, 3, 32, 32, generator=gen) * 2 - 1, torch.rand(b, 1, 32, 32, generator=gen) * 2 - 1,
                    torch.randint(0, 5, (b, 32, 32), generator=gen))
    points = torch.zeros(b, 32, 32, dtype=torch.long)
    points[:, 5, 7], points[:, 20, 3], points[:, 9, 30] = 1, 2, 3
    return x0, points


def test_full_resolution_path_starts_as_the_model_without_it_then_learns():
    base = _model(unshuffle=2)
    wide = _model(seed=1, unshuffle=2, full_res_channels=8)
    missing, unexpected = wide.load_state_dict(base.state_dict(), strict=False)
    assert missing and all(k.startswith("denoiser.full_res.") for k in missing) and not unexpected
    x0, points = _batch()
    x_t = JointState(x0.image + 0.3, x0.distance - 0.2, x0.label)
    t = torch.tensor([3, 400, 999])
    prompts = ["high-quality histopathology colon tissue image including nuclei types of epithelial"] * 3

    def predict(m):
        with torch.no_grad():
            text = m.encode_text(prompts, torch.ones(3, dtype=torch.bool))
            return m.denoiser(x_t, t, text, m.denoiser.encode_points(points))

    before, reference = predict(wide), predict(base)
    assert torch.equal(before.eps_image, reference.eps_image)
    assert torch.equal(before.log_x0_label, reference.log_x0_label)
    opt = torch.optim.SGD(wide.denoiser.full_res.parameters(), lr=0.05)
    for step in range(2):  # the zero-initialised joins open on the first step, the rest follows
        opt.zero_grad()
        wide.training_losses(x0, points, prompts, torch.ones(3, dtype=torch.bool),
                             torch.Generator().manual_seed(step))["total"].backward()
        opt.step()
    for name, p in wide.denoiser.full_res.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not torch.allclose(predict(wide).eps_image, reference.eps_image)


def test_same_seed_same_samples_and_seed_matters():
    m = _model()
    lays = [_layout(seed=1), _layout(n=0, seed=2)]
    a = m.sample(lays, steps=4, generator=torch.Generator().manual_seed(7))
    b = m.sample(lays, steps=4, generator=torch.Generator().manual_seed(7))
    c = m.sample(lays, steps=4, generator=torch.Generator().manual_seed(8))
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.semantic, y.semantic)
        assert np.array_equal(x.distance, y.distance) and x.prompt == y.prompt
    assert not np.array_equal(a[0].image, c[0].image)
    o = a[0]
    assert o.image.shape == (32, 32, 3) and o.image.dtype == np.uint8
    assert o.semantic.dtype == np.int64 and 0 <= o.semantic.min() and o.semantic.max() <= 4
    assert o.distance.dtype == np.float32 and 0 <= o.distance.min() and o.distance.max() <= 1
    assert a[1].prompt.endswith("with no nucleus")


def test_guidance_one_is_conditional_and_zero_unconditional_through_the_network():
    from wsi_cosynth.diffusion.guidance import guided_model_fn

    m = _model().eval()
    gen = torch.Generator().manual_seed(0)
    b = 2
    x_t = JointState(torch.randn(b, 3, 32, 32, generator=gen), torch.randn(b, 1, 32, 32, generator=gen),
                     torch.randint(0, 5, (b, 32, 32), generator=gen))
    t = torch.tensor([600, 600])
    points = torch.zeros(b, 32, 32, dtype=torch.long)
    points[:, 10, 12] = 3
    prompts = ["high-quality histopathology colon tissue image including nuclei types of epithelial"] * b
    keep = torch.ones(b, dtype=torch.bool)
    with torch.no_grad():
        feats = m.denoiser.encode_points(points)
        cond_text, null_text = m.encode_text(prompts, keep), m.encode_text(prompts, ~keep)
        cond = m.denoiser(x_t, t, cond_text, feats)
        uncond = m.denoiser(x_t, t, null_text, feats)
        assert not torch.allclose(cond.eps_image, uncond.eps_image)  # the text does matter
        paired = lambda x, tt: m.denoiser(x, tt, torch.cat([cond_text, null_text]), torch.cat([feats, feats]))  # noqa: E731
        for w, ref in ((1.0, cond), (0.0, uncond)):
            out = guided_model_fn(paired, w)(x_t, t)
            assert torch.allclose(out.eps_image, ref.eps_image, atol=1e-5)
            assert torch.allclose(out.eps_distance, ref.eps_distance, atol=1e-5)
            assert torch.allclose(out.log_x0_label, ref.log_x0_label, atol=1e-5)


def test_sampling_runs_one_forward_per_step():
    m = _model().eval()
    sizes = []
    m.denoiser.register_forward_hook(lambda mod, args, out: sizes.append(int(out.eps_image.shape[0])))
    for w, expect in ((2.0, 2), (1.0, 1)):
        sizes.clear()
        m.sample([_layout(seed=3)], steps=3, guidance=w, generator=torch.Generator().manual_seed(0))
        assert sizes == [expect] * 3  # cond + uncond as ONE doubled batch; w = 1 needs no uncond pass


def test_guidance_interval_guides_only_the_steps_inside_it():
    m = _model().eval()
    seen = []
    m.denoiser.register_forward_hook(lambda mod, args, out: seen.append((int(args[1][0]), int(out.eps_image.shape[0]))))
    m.sample([_layout(seed=3)], steps=5, guidance=2.0, generator=torch.Generator().manual_seed(0),
             guidance_interval=(0.3, 0.7))
    last = m.process.num_steps - 1
    assert len(seen) == 5
    for t, rows in seen:  # two rows (cond + uncond) exactly where t / (T - 1) is in the interval
        assert rows == (2 if 0.3 <= t / last <= 0.7 else 1), (t, rows)
    assert {rows for _, rows in seen} == {1, 2}
    # the full interval is the paper's guidance at every step, and the default
    a = m.sample([_layout(seed=3)], steps=3, generator=torch.Generator().manual_seed(1), guidance_interval=(0.0, 1.0))
    b = m.sample([_layout(seed=3)], steps=3, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(a[0].image, b[0].image)
    with pytest.raises(CosynthError, match="guidance_interval"):
        CosynthConfig.from_dict({**m.config.to_dict(), "sample": {"guidance_interval": [0.8, 0.2]}})


@pytest.mark.parametrize("over", [{"unshuffle": 2, "input_skip": True}, {"unshuffle": 2, "full_res_channels": 8}])
def test_repeated_conditions_run_the_input_layers_once_and_predict_as_a_repeated_batch(over):
    m = _model(**over).eval()
    with torch.no_grad():  # the zero-initialised joins would hide a wrong repeat of their inputs
        for p in m.denoiser.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.1)
    x0, points = _batch(b=2)
    x_t = JointState(x0.image * 0.7, x0.distance, x0.label)
    t = torch.tensor([900, 40, 900, 40])
    prompts = ["high-quality histopathology colon tissue image including nuclei types of epithelial"] * 2
    keep = torch.ones(2, dtype=torch.bool)
    stem_rows = []
    with torch.no_grad():
        text = torch.cat([m.encode_text(prompts, keep), m.encode_text(prompts, ~keep)])
        feats = m.denoiser.encode_points(points).repeat(2, 1, 1, 1)
        repeated = m.denoiser(x_t.repeat(2), t, text, feats)
        m.denoiser.stem.register_forward_hook(lambda mod, args, out: stem_rows.append(int(args[0].shape[0])))
        shared = m.denoiser(x_t, t, text, feats, repeats=2)
    assert stem_rows == [2]
    for field in ("eps_image", "eps_distance", "log_x0_label"):
        a, b = getattr(repeated, field), getattr(shared, field)
        assert a.shape == b.shape and a.shape[0] == 4
        assert torch.allclose(a, b, atol=1e-5), field
    assert not torch.allclose(shared.eps_image[:2], shared.eps_image[2:])  # the halves' conditions differ


def test_point_features_are_computed_once_per_sample():
    m = _model()
    calls = []
    m.denoiser.points.register_forward_hook(lambda *a: calls.append(1))
    m.sample([_layout(seed=4), _layout(seed=5)], steps=5, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1


def test_taxonomy_and_size_mismatch_are_errors():
    m = _model()
    other = Layout(np.array([[3.0, 4.0]]), np.array([1]), (32, 32), get_taxonomy("pannuke"), Provenance(name="p"))
    with pytest.raises(CosynthError, match="taxonomy"):
        m.sample([other], steps=2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(CosynthError, match="tile size"):
        m.sample([_layout(size=64)], steps=2, generator=torch.Generator().manual_seed(0))


def test_sampling_settings_left_out_are_the_models_own():
    # A model ships with the sampler settings chosen for it (config ``sample``); an explicit
    # argument wins, and a bad one is a clear error, not a crash deep in the sampler.
    base = _model().eval()
    ddpm_config = CosynthConfig.from_dict({**base.config.to_dict(), "sample": {"steps": 3, "sampler": "ddpm"}})
    m = CosynthModel(ddpm_config, TAX, mpp=0.25).eval()
    m.load_state_dict(base.state_dict())
    steps_seen = []
    m.denoiser.register_forward_hook(lambda mod, args, out: steps_seen.append(int(args[1][0])))

    def draw(**given):
        return m.sample([_layout(seed=3)], generator=torch.Generator().manual_seed(2), **given)[0].image

    own = draw()
    assert len(steps_seen) == 3
    assert np.array_equal(own, draw(steps=3, sampler="ddpm"))
    assert not np.array_equal(own, draw(steps=3, sampler="ddim"))
    with pytest.raises(CosynthError, match="sampling settings"):
        draw(sampler="euler")
