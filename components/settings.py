"""Settings of the training components: the container image they run in."""

from __future__ import annotations

from pydantic import Field

from rtml_common.settings import RtmlSettings

DEFAULT_IMAGE = "ghcr.io/rtml-project/rtml:0.1.0"


class ComponentSettings(RtmlSettings):
    """Read when the component module is imported (kfp fixes the image at decoration time)."""

    pipeline_image: str = Field(DEFAULT_IMAGE, description="Container image of every pipeline step; it must contain rtml's code.")
