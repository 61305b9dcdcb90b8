"""Networks in pure torch: SuperPoint, LightGlue, and kornia's DISK/ALIKED behind one interface."""
from lightglue_ros.models.extractors import EXTRACTORS, Extractor, build_extractor
from lightglue_ros.models.lightglue import LightGlue, MatchResult, PreparedFeatures
from lightglue_ros.models.superpoint import SuperPoint

__all__ = ['EXTRACTORS', 'Extractor', 'LightGlue', 'MatchResult', 'PreparedFeatures',
           'SuperPoint', 'build_extractor']
