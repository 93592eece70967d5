from bastion.config.loader import ConfigError, load_config, load_config_text
from bastion.config.model import GatewayConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "load_config_text"]
