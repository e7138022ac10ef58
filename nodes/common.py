"""Shared bits of the node layer: the menu root and custom socket types."""

from comfy_api.v0_0_2 import io

CATEGORY = "ACE++"

# Canvas geometry (per batch item) carried from the canvas node to the conditioning and stitch nodes.
Geometry = io.Custom("ACE_PLUS_GEOMETRY")
