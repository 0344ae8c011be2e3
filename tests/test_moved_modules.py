"""The module paths of earlier versions still import, as the very module that now holds them."""

import importlib

import pytest

from es_l2l.moved_modules import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_imports_the_module_that_holds_it_now(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_a_model_logged_before_the_move_finds_its_class_under_the_old_names():
    from es_l2l.mlflow_model import LSNNModel  # what the entry file stored with such a model says
    from es_l2l.tracking.network_model import NetworkPyfunc

    assert LSNNModel is NetworkPyfunc


def test_the_table_names_no_module_that_still_exists_under_its_old_path():
    from pathlib import Path

    package = Path(importlib.import_module("es_l2l").__file__).parent
    assert [old for old in MOVED if (package / (old.removeprefix("es_l2l.").replace(".", "/") + ".py")).exists()] == []
