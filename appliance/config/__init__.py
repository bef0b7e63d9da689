"""The appliance configuration: schema, loading and validation, and the API key.

See :mod:`appliance.config.schema` for how to add settings and sections.
"""

from appliance.config.loader import find_config_path, load_config
from appliance.config.schema import (
    EX_CONFIG,
    AudioConfig,
    Config,
    ConfigError,
    LoggingConfig,
    RealtimeConfig,
)
from appliance.config.secrets import ApiKey

__all__ = [
    "EX_CONFIG",
    "ApiKey",
    "AudioConfig",
    "Config",
    "ConfigError",
    "LoggingConfig",
    "RealtimeConfig",
    "find_config_path",
    "load_config",
]
