import numpy as np
import pytest

from generation.sdedit import (
    make_pair_id,
    nearest_sigma_index,
    noise_to_level,
    pair_randomness,
    source_frame_indices,
)


def test_nearest_sigma_index_on_wan_schedules():
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    unipc = UniPCMultistepScheduler(flow_shift=3.0, prediction_type="flow_prediction", use_flow_sigmas=True)
    unipc.set_timesteps(40)
    sigmas = unipc.sigmas[:-1].tolist()
    for eta in (0.65, 0.7, 0.75, 0.8):
        i = nearest_sigma_index(sigmas, eta)
        assert all(abs(sigmas[i] - eta) <= abs(s - eta) for s in sigmas)
        assert abs(sigmas[i] - eta) < 0.02  # 40 shifted steps are dense around 0.7
    # diffusers' strength is not eta: strength 0.5 starts far above sigma 0.5 under shift 3
    start = 40 - int(40 * 0.5)
    assert sigmas[start] > 0.7
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    euler.set_timesteps(10)
    assert nearest_sigma_index(euler.sigmas[:-1].tolist(), 0.72) == 5  # sigmas ... 0.7904, 0.7073, 0.6022 ...


def test_nearest_ties_go_to_the_noisier_step():
    assert nearest_sigma_index([1.0, 0.75, 0.25], 0.5) == 1
    with pytest.raises(ValueError):
        nearest_sigma_index([], 0.5)


def test_noise_to_level():
    x0, eps = np.full(3, 2.0), np.full(3, -1.0)
    assert np.allclose(noise_to_level(x0, eps, 0.0), x0)
    assert np.allclose(noise_to_level(x0, eps, 1.0), eps)
    assert np.allclose(noise_to_level(x0, eps, 0.7), 0.3 * 2 - 0.7)


def test_pair_randomness_is_per_source_and_in_range():
    a = pair_randomness(0, "clip-1", 0.65, 0.8)
    assert a == pair_randomness(0, "clip-1", 0.65, 0.8)
    assert a != pair_randomness(0, "clip-2", 0.65, 0.8) and a != pair_randomness(1, "clip-1", 0.65, 0.8)
    etas = [pair_randomness(0, f"c{i}", 0.65, 0.8)[0] for i in range(200)]
    assert min(etas) >= 0.65 and max(etas) <= 0.8 and np.std(etas) > 0.03
    seeds = [pair_randomness(0, f"c{i}", 0.65, 0.8)[1:] for i in range(50)]
    assert all(a != b for a, b in seeds)


def test_pair_id_depends_on_everything_that_changes_the_videos():
    base = dict(source_id="s/1", model_id="m", mode="sdedit", eta=0.7, seed_a=1, seed_b=2, steps=40)
    pid = make_pair_id(**base)
    assert pid == make_pair_id(**base) and pid.startswith("s-1-")
    for change in (dict(eta=0.71), dict(seed_b=3), dict(model_id="m2"), dict(steps=20), dict(mode="vanilla")):
        assert make_pair_id(**{**base, **change}) != pid


def test_source_frame_indices_resample_and_refuse_short_clips():
    assert source_frame_indices(30, 300, 15, 5, 0.0) == [0, 2, 4, 6, 8]
    assert source_frame_indices(24, 300, 16, 5, 1.0) == [24, 25, 27, 28, 30]
    assert source_frame_indices(16, 17, 16, 17, 0.0) == list(range(17))
    with pytest.raises(ValueError, match="need 1.06 s, the clip has 1.00 s"):
        source_frame_indices(16, 16, 16, 17, 0.0)


def test_model_id_of_a_local_folder_is_absolute(tmp_path, monkeypatch):
    """Tables record a local model folder as an absolute path (valid from any working directory); hub ids stay."""
    from generation.engine import model_id

    (tmp_path / "models" / "wan").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "models")
    assert model_id("wan") == str(tmp_path / "models" / "wan")
    assert model_id("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def test_nearest_sigma_index_within_bounds():
    sigmas = [1.0, 0.964, 0.923, 0.875, 0.818, 0.75, 0.667, 0.563]  # UniPC, 10 steps, shift 3
    assert nearest_sigma_index(sigmas, 0.79) == 4  # 0.818 is the nearest ...
    assert nearest_sigma_index(sigmas, 0.79, 0.65, 0.8) == 5  # ... but outside [0.65, 0.8]: 0.75
    assert nearest_sigma_index(sigmas, 0.79, 0.77, 0.8) == 4  # nothing inside: the nearest overall
    assert nearest_sigma_index(sigmas, 0.75, 0.75, 0.75) == 5  # closed bounds
