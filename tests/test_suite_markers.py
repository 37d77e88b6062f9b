"""The suite's markers tell the truth: a test that is not marked `integration` cannot reach the network, and a
test that uses a service fixture is marked `integration` without anyone remembering to."""

from __future__ import annotations

import socket

import pytest
from conftest import SERVICE_FIXTURES, NetworkInUnitTest, pytest_collection_modifyitems


def test_a_unit_test_cannot_connect_to_the_network():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkInUnitTest, match="127.0.0.1"):
        sock.connect(("127.0.0.1", 9))
    with pytest.raises(NetworkInUnitTest):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)


def test_a_unix_socket_pair_is_still_allowed():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"


def test_a_test_using_a_service_fixture_through_another_is_marked_integration():
    class Item:
        def __init__(self, fixtures):
            self.fixturenames, self.markers = fixtures, []

        def add_marker(self, marker):
            self.markers.append(marker.name)

    uses_db, uses_api, pure = Item(["tmp_path", "db"]), Item(["api", "stack_env", "db"]), Item(["tmp_path"])
    pytest_collection_modifyitems(None, [uses_db, uses_api, pure])
    assert uses_db.markers == ["integration"] and uses_api.markers == ["integration"]
    assert pure.markers == []
    assert {"db", "api", "worker_process", "awx_double"} <= SERVICE_FIXTURES


def test_a_test_that_changes_the_environment_leaves_it_as_it_found_it():
    """The autouse guard in conftest.py: this pair only passes, in this order, if the first test's change is undone."""
    import os

    from core.settings import get_settings, reset_settings_cache

    os.environ["POLICY_FILE"] = "/nonexistent/left-behind.yml"
    reset_settings_cache()
    assert str(get_settings().policy_file) == "/nonexistent/left-behind.yml"  # left behind for the next test


def test_the_next_test_sees_the_environment_as_before():
    import os

    from core.settings import get_settings

    assert os.environ.get("POLICY_FILE") != "/nonexistent/left-behind.yml"
    assert str(get_settings().policy_file) != "/nonexistent/left-behind.yml"
