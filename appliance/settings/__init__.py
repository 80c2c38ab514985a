"""The appliance settings: one TOML file, ``/etc/solargw/solargw.toml``.

- :mod:`~appliance.settings.model`: the sections as dataclasses, types checked (``from_dict``);
- :mod:`~appliance.settings.rules`: which values make sense (``validate``), the one place for value rules;
- :mod:`~appliance.settings.storage`: the file (``load``, ``load_valid``, ``save``) and the
  environment overrides;
- :mod:`~appliance.settings.editing`: writing some sections in place (``save_sections``);
- :mod:`~appliance.settings.recovery`: running on the last good settings when the file breaks
  (``load_recovering``);
- :mod:`~appliance.settings.localtime`: ``[system] timezone`` as the process's local time.

Every error names the key.
"""
from appliance.settings.localtime import apply_timezone
from appliance.settings.model import (
    AccessPointSettings,
    AdminSettings,
    DataSettings,
    GatewaySettings,
    MqttSettings,
    PvoutputSettings,
    RelaySettings,
    Settings,
    SettingsError,
    SystemSettings,
    UpstreamWifiSettings,
    WebSettings,
    ZigbeeSettings,
    from_dict,
)
from appliance.settings.rules import Problems, advice, describe, require_valid, validate
from appliance.settings.editing import save_sections
from appliance.settings.recovery import Loaded, keep_broken, keep_last_good, last_good_path, load_recovering
from appliance.settings.storage import (
    DEFAULT_PATH,
    file_fingerprint,
    load,
    load_valid,
    save,
    settings_path,
    without_overrides,
)

__all__ = [
    "AccessPointSettings", "AdminSettings", "DataSettings", "GatewaySettings", "MqttSettings", "PvoutputSettings",
    "RelaySettings", "Settings",
    "SettingsError", "SystemSettings", "UpstreamWifiSettings", "WebSettings", "ZigbeeSettings", "from_dict",
    "Problems", "advice", "describe", "require_valid", "validate",
    "DEFAULT_PATH", "file_fingerprint", "load", "load_valid", "save", "save_sections", "settings_path",
    "without_overrides",
    "apply_timezone", "Loaded", "keep_broken", "keep_last_good", "last_good_path", "load_recovering",
]
