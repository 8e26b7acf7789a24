"""Helpers shared by the tools (these may import OpenMMLab packages)."""
