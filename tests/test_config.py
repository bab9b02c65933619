import pytest

from dstbench.config import RunConfig, parse_values, resolve
from dstbench.errors import UserError


def _resolve(plugins, flags=None, toml=None, tmp_path=None):
    path = None
    if toml is not None:
        path = tmp_path / "run.toml"
        path.write_text(toml)
    return resolve(flags or {}, path, plugins.registry)


def test_layers_defaults_recipe_file_flags(plugins, tmp_path):
    cfg = _resolve(plugins)
    recipe = plugins.registry.dataset("digits").recipe
    assert cfg.model == recipe["model"] and cfg.epochs == recipe["epochs"] and cfg.lr == recipe["lr"]
    assert cfg.momentum == RunConfig.momentum  # not in the recipe: the global default
    assert cfg.trainer == "image" and cfg.algo == "dense" and cfg.sparsity == 0.0
    cfg = _resolve(plugins, {"epochs": "7"}, 'epochs = 3\nlr = 0.01\nseverities = "2-4"\n', tmp_path)
    assert cfg.epochs == 7 and cfg.lr == 0.01 and cfg.severities == (2, 3, 4)


def test_toml_run_table_and_algo_options_table(plugins, tmp_path):
    cfg = _resolve(plugins, None, '[run]\nseed = 4\ncorruptions = ["gaussian_noise"]\n', tmp_path)
    assert cfg.seed == 4 and cfg.corruptions == ("gaussian_noise",)


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"algo": "rgl"}, "unknown algorithm 'rgl'"),
        ({"model": "resnet-18"}, "unknown model 'resnet-18'"),
        ({"dataset": "cifar11"}, "did you mean 'cifar10'?"),
        ({"suite": "nope"}, "unknown suite 'nope'"),
        ({"trainer": "nope"}, "unknown trainer 'nope'"),
        ({"sparsity": "1.0"}, "--sparsity must be in [0, 1)"),
        ({"sparsity": "-0.1"}, "--sparsity must be in [0, 1)"),
        ({"sparsity": "0.3"}, "algorithm 'dense' trains all weights"),
        ({"epochs": "0"}, "--epochs must be at least 1"),
        ({"epochs": "-3"}, "--epochs must be at least 1"),
        ({"epochs": "ten"}, "bad value for 'epochs'"),
        ({"lr": "0"}, "--lr must be in (0, 3.4e38], got 0.0"),
        ({"lr": "inf"}, "--lr must be in (0, 3.4e38], got inf"),
        ({"lr": "1e308"}, "--lr must be in (0, 3.4e38], got 1e+308"),
        ({"weight_decay": "1e308"}, "--weight-decay must be in [0, 3.4e38], got 1e+308"),
        ({"weight_decay": "inf"}, "--weight-decay must be in [0, 3.4e38], got inf"),
        ({"batch_size": str(2**70)}, "--batch-size must be below 2**53"),
        ({"max_test_samples": str(2**53)}, "--max-test-samples must be below 2**53"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; choose from: sgd, adamw"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"severities": "0,1"}, "severit"),
        ({"severities": "1-9"}, "severit"),
        ({"corruptions": "fogg"}, "(did you mean 'fog'?)"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"algo_options": ("drop=0.3",)}, "algorithm 'dense' has no option 'drop'"),
        ({"algo_options": ("drop",)}, "is not KEY=VALUE"),
        ({"warmup_epochs": "30"}, "--warmup-epochs must be in [0, epochs)"),
        ({"clip_cache_gib": "-1"}, "--clip-cache-gib must be at least 0, got -1.0"),
        ({"clip_cache_gib": "lots"}, "bad value for 'clip_cache_gib'"),
        ({"optimizer": "adamw", "nesterov": "true"}, "--nesterov: applies to --optimizer sgd, not adamw"),
        ({"optimizer": "adamw", "momentum": "0.5"}, "--momentum 0.5: applies to --optimizer sgd, not adamw"),
        ({"momentum": "0", "nesterov": "true"}, "--nesterov: needs --momentum above 0"),
        ({"milestones": "0.3,0.6"}, "--milestones 0.3,0.6: applies to --schedule multistep, not cosine"),
        ({"gamma": "0.2"}, "--gamma 0.2: applies to --schedule multistep, not cosine"),
        ({"frames": "8"}, "--frames 8: applies to video datasets; 'digits' is image"),
        ({"frame_stride": "2"}, "--frame-stride 2: applies to video datasets"),
        ({"split": "2"}, "--split 2: applies to video datasets"),
        ({"skip_bad": "true"}, "--skip-bad: applies to video datasets"),
        ({"clip_cache_gib": "1"}, "--clip-cache-gib 1.0: applies to video datasets"),
    ],
)
def test_bad_values_are_one_line_errors(plugins, flags, message):
    with pytest.raises(UserError) as info:
        _resolve(plugins, flags)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cuda_without_cuda_is_an_error(plugins, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        _resolve(plugins, {"device": "cuda"})


def test_bad_config_files(plugins, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve({}, tmp_path / "missing.toml", plugins.registry)
    with pytest.raises(UserError, match="cannot read config file"):
        _resolve(plugins, None, "epochs = = 3", tmp_path)
    with pytest.raises(UserError, match="unknown setting 'epoch'; valid settings: dataset"):
        _resolve(plugins, None, "epoch = 3", tmp_path)
    with pytest.raises(UserError, match="bad value for 'epochs': 'ten'"):
        _resolve(plugins, None, 'epochs = "ten"', tmp_path)
    with pytest.raises(UserError, match="bad value for 'epochs': 2.5"):
        _resolve(plugins, None, "epochs = 2.5", tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b'model = "caf\xe9"')
    with pytest.raises(UserError, match="cannot read config file .*latin1.toml: 'utf-8' codec can't decode"):
        resolve({}, tmp_path / "latin1.toml", plugins.registry)


def test_settings_a_run_does_not_use_are_accepted_at_their_defaults(plugins, tmp_path):
    """What `dstbench sweep` passes its worker processes: every setting, the unused ones at their defaults."""
    cfg = _resolve(plugins, {"optimizer": "adamw", "momentum": "0.9", "nesterov": "false", "split": "1"})
    assert cfg.optimizer == "adamw" and cfg.milestones == RunConfig.milestones
    cfg = _resolve(plugins, {"schedule": "multistep", "milestones": "0.75,0.25", "gamma": "0.2"})
    assert cfg.milestones == (0.25, 0.75) and cfg.gamma == 0.2  # sorted: the same schedule is the same setting
    cfg = _resolve(plugins, {"dataset": "moving-digits", "frames": "8", "split": "2", "skip_bad": "true"})
    assert (cfg.frames, cfg.split, cfg.skip_bad) == (8, 2, True)


def test_a_dense_run_drops_the_sparsity_distribution(plugins, tmp_path):
    """So that a sweep's --distribution (or its config file's) serves its dense runs too."""
    assert _resolve(plugins, {"distribution": "erk"}).distribution is None
    assert _resolve(plugins, None, 'distribution = "erk"', tmp_path).distribution is None
    assert _resolve(plugins, {"algo": "rigl", "distribution": "erk"}).distribution == "erk"


def test_values_parse_from_strings_and_typed_toml():
    assert parse_values({"milestones": "0.3, 0.6"}, "x") == {"milestones": (0.3, 0.6)}
    assert parse_values({"milestones": [0.3, 0.6]}, "x") == {"milestones": (0.3, 0.6)}
    assert parse_values({"nesterov": "yes", "channels-last": False}, "x") == {"nesterov": True, "channels_last": False}
    assert parse_values({"algo_options": ["a=1", "b = x"]}, "x") == {"algo_options": {"a": "1", "b": "x"}}
    assert parse_values({"seed": None}, "x") == {}


def test_run_id_names_the_run(plugins):
    assert _resolve(plugins, {"seed": "3"}).run_id == "digits-digits-cnn-dense-seed3"


def test_settings_diff_reads_saved_algorithm_options_as_values():
    from dstbench.config import settings_diff

    now = {"epochs": 2, "algo_options": {"update_interval": 3, "sign_split": True, "t_end": 0.75, "x": None}}
    flags = {"update_interval": "03", "sign_split": "true", "t_end": "0.75", "x": "none"}  # as older runs saved them
    assert settings_diff({"epochs": 2, "algo_options": flags}, now) == []
    assert settings_diff({"epochs": 2, "algo_options": {**flags, "update_interval": "4"}}, now) == [
        "algo_options={'update_interval': '4', 'sign_split': 'true', 't_end': '0.75', 'x': 'none'} (now "
        "{'update_interval': 3, 'sign_split': True, 't_end': 0.75, 'x': None})"
    ]
    assert settings_diff({"epochs": 3, "algo_options": {}}, {"epochs": 2, "algo_options": {}}) == ["epochs=3 (now 2)"]
    assert settings_diff({"algo_options": {"update_interval": "x"}}, {"algo_options": {"update_interval": 3}}) != []


def test_algorithm_options_resolve_to_values_from_flags_and_toml_alike(plugins, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('algo = "rigl"\n[algo_options]\nupdate_interval = 3\ndrop_fraction = 0.5\n')
    from_toml = resolve({"device": "cpu"}, toml, plugins.registry)
    flags = {"device": "cpu", "algo": "rigl", "algo_options": ["update_interval=3", "drop_fraction=.5"]}
    assert resolve(flags, None, plugins.registry).algo_options == from_toml.algo_options
    assert from_toml.algo_options == {"update_interval": 3, "drop_fraction": 0.5}
