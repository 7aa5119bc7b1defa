"""Model families, built from config by one registry: ``spiraljax.models.build(cfg.model)``."""
from spiraljax.models.registry import build, register

__all__ = ["build", "register"]
