"""Networks in pure torch: SuperPoint, LightGlue, and kornia's DISK/ALIKED behind one interface."""
from lightglue_ros.models.extractors import EXTRACTORS, Extractor, build_extractor
from lightglue_ros.models.lightglue import LightGlue, MatchResult, PreparedFeatures

__all__ = ['EXTRACTORS', 'Extractor', 'LightGlue', 'MatchResult', 'PreparedFeatures',
           'build_extractor']
