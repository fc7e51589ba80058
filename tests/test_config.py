from __future__ import annotations

import pytest

from cxr_tune.config import DataSource, TrialConfig, get_profile
from cxr_tune.errors import ConfigError


def test_trial_config_defaults_are_the_papers_settings():
    cfg = TrialConfig()
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs, cfg.image_size) == (
        "adam",
        1e-4,
        32,
        50,
        224,
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, r"`lr` is 0.0, but must be a number > 0"),
        ("lr", -1e-3, r"`lr` is -0.001"),
        ("batch_size", 0, r"`batch_size` is 0, but must be an integer >= 1"),
        ("epochs", 1.5, r"`epochs` is 1.5"),
        ("momentum", 1.0, r"`momentum` is 1.0, but must be in \[0, 1\)"),
        ("weight_decay", -0.1, r"`weight_decay` is -0.1"),
        (
            "augment",
            "heavy",
            r"`augment` is 'heavy', but must be one of: none, paper, light, strong",
        ),
        ("image_size", 16, r"`image_size` is 16"),
    ],
)
def test_trial_config_rejects_bad_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict({field: value})


def test_trial_config_from_dict_ignores_tune_keys_and_coerces_numbers():
    cfg = TrialConfig.from_dict(
        {"lr": 1, "epochs": 3.0, "trial_id": "x", "cell": "phantom/alexnet"}
    )
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.cell == "phantom/alexnet"


def test_data_source_parses_key_and_path(tmp_path):
    assert DataSource.parse("phantom") == DataSource("phantom", None)
    assert DataSource.parse(f"imagefolder={tmp_path}") == DataSource(
        "imagefolder", tmp_path.resolve()
    )
    assert DataSource.parse(str(tmp_path)) == DataSource(None, tmp_path.resolve())


def test_data_source_missing_folder_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"--data: the folder '.*nope' does not exist"):
        DataSource.parse(f"covid_chestxray={missing}")


def test_unknown_profile_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'smoke'"):
        get_profile("smok")


def test_checkpoints_every_n_epochs_and_after_the_last():
    cfg = TrialConfig(epochs=5, checkpoint_every=2)
    assert [e for e in range(1, 6) if cfg.checkpoints_after(e)] == [2, 4, 5]
    assert all(TrialConfig(epochs=3).checkpoints_after(e) for e in (1, 2, 3))
    with pytest.raises(ConfigError, match="checkpoint_every"):
        TrialConfig(checkpoint_every=0)
