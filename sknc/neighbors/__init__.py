"""Nearest-class-centre classifier for few-shot transfer."""

from ._nearest_class_center import NearestClassCenter

__all__ = ["NearestClassCenter"]
