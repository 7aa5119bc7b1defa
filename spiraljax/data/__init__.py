"""Data sources. Each source module defines a config class (a :class:`spiraljax.config.DataConfig`
subclass that registers itself under its ``source``) whose ``build(cfg)`` returns the dataset.

:data:`SOURCES` is the one list of the in-tree sources: loading a config imports this package
(``DataConfig.PACKAGE``), and ``DataConfig.registered()`` then holds exactly these classes (checked by
tests/test_config.py), as :data:`spiraljax.models.FAMILIES` does for the model families."""

from spiraljax.config import DataConfig
from spiraljax.data import curriculum, induction, longdocs, mycelial, recall, text

# data.source → config class, every source of the repository
SOURCES: dict[str, type[DataConfig]] = {
    "text": text.TextDataConfig,
    "mycelial": mycelial.MycelialDataConfig,
    "curriculum": curriculum.CurriculumDataConfig,
    "induction": induction.InductionDataConfig,
    "mqar": recall.MQARDataConfig,
    "longdocs": longdocs.LongDocsConfig,
}
