"""API keys follow the mounted Secret: a removed key is refused within 60 s, the others never fail."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlmodel_server import auth

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2]]


def _kubelet_write(mount: Path, generation: int, text: str) -> Path:
    """Write ``keys`` the way kubelet updates a mounted Secret: a new timestamped directory, then an atomic
    rename of the ``..data`` symlink onto it; ``keys`` itself is a symlink through ``..data``."""
    data = mount / f"..2026_12_05_00_00_0{generation}.000000000"
    data.mkdir()
    (data / "keys").write_text(text)
    swap = mount / "..data_tmp"
    swap.symlink_to(data.name)
    old = (mount / "..data").readlink() if (mount / "..data").is_symlink() else None
    swap.rename(mount / "..data")
    if old is not None:
        for entry in (mount / old).iterdir():
            entry.unlink()
        (mount / old).rmdir()
    if not (mount / "keys").is_symlink():
        (mount / "keys").symlink_to("..data/keys")
    return mount / "keys"


def test_a_removed_key_is_refused_without_restart(make_client: Callable[..., Any], tmp_path: Path) -> None:
    path = _kubelet_write(tmp_path, 1, "old-key\nkept-key\n")
    client = make_client(api_keys=auth.read_keys(path), api_keys_file=path)

    def status(key: str) -> int:
        return int(client.post("/predict", json={"features": IRIS_ROWS}, headers={"X-API-Key": key}).status_code)

    assert (status("old-key"), status("kept-key"), status("new-key")) == (200, 200, 401)
    _kubelet_write(tmp_path, 2, "kept-key\nnew-key\n")
    deadline = time.monotonic() + 60
    while status("old-key") == 200:
        assert status("kept-key") == 200
        assert time.monotonic() < deadline, "a removed API key was still accepted after 60 s"
        time.sleep(0.05)
    assert (status("old-key"), status("kept-key"), status("new-key")) == (401, 200, 200)


def test_a_bad_update_keeps_the_keys_in_force(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(auth, "RECHECK_S", 0.0)
    path = _kubelet_write(tmp_path, 1, "kept-key\n")
    keys = auth.KeyFile(path, auth.read_keys(path))
    _kubelet_write(tmp_path, 2, "# emptied\n")
    assert keys.current() == (b"kept-key",)
    _kubelet_write(tmp_path, 3, "next-key\n")
    assert keys.current() == (b"next-key",)
