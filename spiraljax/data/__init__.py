"""Data sources. Each source module defines a config class (a :class:`spiraljax.config.DataConfig`
subclass that registers itself under its ``source``) whose ``build(cfg)`` returns the dataset;
importing this package imports every source, which is how a config finds its class."""
from spiraljax.data import curriculum, induction, longdocs, mycelial, recall, text  # noqa: F401  (registers them)
