"""Shared fixtures and test hygiene; the helper modules are in ``support/``."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from appliance import __version__
from appliance.settings import Settings, save
from appliance.store import Store
from appliance.web.app import create_app
from support import firmware_images
from support.brokers import Broker, mosquitto

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "build" / f"solargw-{__version__}-arm64.img"
IMAGE_SOURCES = ("appliance", "ansible", "image", "pyproject.toml")


@pytest.fixture(autouse=True)
def _restore_local_time_zone():
    """``create_app`` and ``Services.apply_settings`` set this process's ``TZ`` from the settings
    (:func:`appliance.settings.apply_timezone`); one test's zone must not leak into the next."""
    before = os.environ.get("TZ")
    yield
    if os.environ.get("TZ") != before:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings with the data directory in ``tmp_path`` and MQTT off. A module that needs
    more overrides this fixture, asking for it by name: ``def settings(settings): ...``."""
    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.enabled = False
    return settings


@pytest.fixture
def settings_file(settings: Settings, tmp_path: Path) -> Path:
    """:func:`settings`, saved as ``tmp_path/solargw.toml``."""
    path = tmp_path / "solargw.toml"
    save(settings, path)
    return path


@pytest.fixture
def store(settings: Settings) -> Store:
    """The store in :func:`settings`' data directory."""
    return Store(settings.data_dir)


@pytest.fixture
def client(settings: Settings, store: Store):
    """The web app on :func:`settings` and :func:`store`, through Flask's test client."""
    app = create_app(settings, store)
    app.config["TESTING"] = True
    return app.test_client()


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A real mosquitto on a free loopback port, anonymous, without TLS."""
    with mosquitto() as running:
        yield running


@pytest.fixture
def good_hex(tmp_path: Path) -> Path:
    """A synthetic coordinator image that ``solargw firmware check`` calls good for Enecsys."""
    return firmware_images.write(tmp_path / "good.hex", firmware_images.make_image())


def newest_image_source() -> float:
    newest = 0.0
    for name in IMAGE_SOURCES:
        path = REPO / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                and "__pycache__" not in p.parts]
        newest = max([newest, *(p.stat().st_mtime for p in files)])
    return newest


@pytest.fixture(scope="session")
def image() -> Path:
    """The SD-card image, built (``image/build.py --no-compress``) unless build/ holds one newer
    than every source it is made from; its provisioned root file system stays in the build cache.
    SOLARGW_TEST_IMAGE=path tests that image as it is."""
    if os.environ.get("SOLARGW_TEST_IMAGE"):
        return Path(os.environ["SOLARGW_TEST_IMAGE"])
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (debootstrap, chroot): run them as root")
    if not IMAGE.exists() or IMAGE.stat().st_mtime < newest_image_source():
        subprocess.run([sys.executable, str(REPO / "image/build.py"), "--no-compress"], check=True)
    return IMAGE
