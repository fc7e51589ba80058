from __future__ import annotations

import pytest
import yaml

from cxr_tune.errors import ConfigError
from cxr_tune.spaces import available_spaces, load_space, parse_space

SHIPPED = ("ablation", "augmentation", "optimizers", "paper", "pretrained", "smoke")


def test_every_shipped_space_is_listed():
    assert set(SHIPPED) <= set(available_spaces())


@pytest.mark.parametrize("name", available_spaces())
def test_shipped_space_loads(name):
    space = load_space(name)
    assert space.name == name
    assert space.metric == "val_macro_f1" and space.mode == "max"
    assert space.cells.get("model")


def test_ablation_reaches_the_papers_points():
    space = load_space("ablation")
    lr = space.params["lr"]
    assert lr.kind == "loguniform" and lr.low <= 1e-4 and lr.high >= 1e-1
    tried = {(p["lr"], p["optimizer"], p.get("weight_decay")) for p in space.initial}
    assert {
        (1e-4, "adam", None),
        (1e-1, "adam", None),
        (1e-2, "adam", None),
        (1e-4, "sgd", 0.5),
    } <= tried
    assert space.params["weight_decay"].when == {"optimizer": ("sgd",)}
    assert set(space.params["batch_size"].choices) == {8, 16, 32, 64, 128}


def test_paper_space_is_the_exact_grid():
    space = load_space("paper")
    assert space.algorithm == "grid" and not space.params
    assert {k: space.fixed[k] for k in ("optimizer", "lr", "batch_size", "epochs")} == {
        "optimizer": "adam",
        "lr": 1e-4,
        "batch_size": 32,
        "epochs": 50,
    }
    assert space.cells["model"] == ("alexnet", "vgg11", "resnet50")


def _space(text: str):
    return parse_space(yaml.safe_load(text), source="x.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parms: {}", r"x.yaml: parms: unknown key. Did you mean 'params'\?"),
        (
            "params: {lr: {loguniform: [0.1, 0.01]}}",
            r"params.lr.loguniform: low \(0.1\) must be < high \(0.01\)",
        ),
        (
            "params: {lr: {loguniform: [0, 0.01]}}",
            r"params.lr.loguniform: a log scale needs low > 0",
        ),
        ("params: {lr: {choice: [0.001, -1]}}", r"params.lr.choice\[1\]: .*`lr` is -1"),
        (
            "params: {batch_size: {choice: []}}",
            r"params.batch_size.choice: expected a non-empty list",
        ),
        (
            "params: {batch_size: {choice: [16, '32']}}",
            r"params.batch_size.choice\[1\]: the value is '32', but `batch_size` takes an int",
        ),
        (
            "params: {lr: {uniform: [1, 2], loguniform: [1, 2]}}",
            r"params.lr: expected exactly one of",
        ),
        (
            "params: {learning_rate: {choice: [0.1]}}",
            r"params.learning_rate: unknown hyperparameter",
        ),
        ("fixed: {lr: 0}", r"fixed.lr: .*must be a number > 0"),
        ("fixed: {dataset: x}", r"fixed.dataset: is set by the search itself"),
        ("cells: {model: []}", r"cells.model: expected a non-empty list"),
        (
            "metric: {name: val_macro_f}",
            r"metric.name: Unknown metric 'val_macro_f'. Did you mean 'val_macro_f1'\?",
        ),
        (
            "search: {num_samples: 0}",
            r"search.num_samples: the value is 0, but must be an integer >= 1",
        ),
        ("search: {algorithm: tpe}", r"search.algorithm: Unknown algorithm 'tpe'"),
        (
            "scheduler: {reduction_factor: 1}",
            r"scheduler.reduction_factor: the value is 1.0, but must be > 1",
        ),
        (
            "scheduler: {metric: val_los}",
            r"scheduler.metric: Unknown metric 'val_los'. Did you mean 'val_loss'\?",
        ),
        (
            "fixed: {epochs: 2}\nscheduler: {grace_period: 3}",
            r"scheduler.grace_period: 3 is more than the 2 epochs",
        ),
        (
            "params: {lr: {loguniform: [1.0e-5, 1.0e-1]}}\nsearch: {initial: [{lr: 1.0}]}",
            r"search.initial\[0\].lr: 1.0 is outside",
        ),
        (
            "params: {optimizer: {choice: [adam]}, weight_decay: {choice: [0.1], when: {optimizer: sgd}}}",
            r"when.optimizer: 'sgd' is not one of optimizer's choices",
        ),
        (
            "params: {lr: {loguniform: [1.0e-5, 1.0e-1]}}\nsearch: {algorithm: grid}",
            r"params.lr: a grid search needs `choice` domains only",
        ),
        ("- a list", r"x.yaml: top level: expected a mapping"),
        ("data: {uncertain: 1}", r"data.uncertain: the value is 1, but must be a name"),
    ],
)
def test_bad_space_gives_one_message_naming_file_and_key(text, message):
    with pytest.raises(ConfigError, match=message):
        _space(text)


def test_unknown_space_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"Unknown space 'ablaton'. Did you mean 'ablation'\?"):
        load_space("ablaton")


def test_space_path_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(str(tmp_path / "mine.yaml"))


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("params: {lr: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_space(str(path))


def test_asha_compares_the_space_metric_unless_the_scheduler_names_another():
    assert _space("").scheduler.rung_metric("val_macro_f1", "max") == ("val_macro_f1", "max")
    scheduler = _space("scheduler: {metric: val_loss}").scheduler
    assert scheduler.rung_metric("val_macro_f1", "max") == ("val_loss", "min")


def test_space_reads_floats_without_a_dot_as_yaml_1_2_does(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("params: {lr: {loguniform: [1e-5, 1e-1]}}\nfixed: {weight_decay: 5E-4}\n")
    space = load_space(str(path))
    assert (space.params["lr"].low, space.params["lr"].high) == (1e-5, 1e-1)
    assert space.fixed["weight_decay"] == 5e-4


def test_space_yaml_stays_safe(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(ConfigError, match=r"evil.yaml: not valid YAML"):
        load_space(str(path))


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_space_file_is_an_error_naming_the_file(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty.yaml: the file is empty .* `params` or `cells`"):
        load_space(str(path))


def test_space_data_options_are_kept_flat_or_per_dataset():
    space = _space("data: {uncertain: ones, chexpert: {views: [PA, AP]}}")
    assert space.data_options == {"uncertain": "ones", "chexpert": {"views": ["PA", "AP"]}}
