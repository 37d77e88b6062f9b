"""`patchpilot up` tells the API and the worker where the UI is, so links in notifications open it."""

from __future__ import annotations

from patchpilot.cli import ui_link_env


def test_the_ui_port_up_picked_becomes_the_link_base():
    assert ui_link_env({}, 18502, with_ui=True) == {"UI_BASE_URL": "http://127.0.0.1:18502"}


def test_an_operators_ui_base_url_wins():
    assert ui_link_env({"UI_BASE_URL": "https://patchpilot.example"}, 18502, with_ui=True) == {}


def test_without_a_ui_no_link_base_is_made_up():
    assert ui_link_env({}, 18502, with_ui=False) == {}
