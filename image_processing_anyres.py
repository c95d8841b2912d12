"""Anyres tiling for Vision-Zephyr: best-fit grid of square tiles plus a low-resolution base view.

The grid arithmetic at the top of this file is shared with the model (which imports it relatively), so the number
of visual tokens per image is computed in exactly one place.
"""

from transformers.image_processing_utils import select_best_resolution


def anyres_grid_shape(
    image_size: tuple[int, int], grid_pinpoints: list[list[int]], tile_size: int
) -> tuple[int, int]:
    """Returns `(rows, cols)` of the tile grid chosen for an image of `image_size = (height, width)`.

    `grid_pinpoints` are candidate canvases as `(height, width)`; their order decides ties, as in the original.
    """
    canvas_height, canvas_width = select_best_resolution(tuple(image_size), grid_pinpoints)
    return canvas_height // tile_size, canvas_width // tile_size


def num_tiles_from_grid(grid_shape: tuple[int, int]) -> int:
    """Tiles fed to the vision tower for one image: the base view plus every grid tile."""
    rows, cols = grid_shape
    return 1 + rows * cols


def num_image_tokens(grid_shape: tuple[int, int], num_query_tokens: int) -> int:
    """Visual tokens (`<image>` placeholders) one image becomes: `num_query_tokens` per tile."""
    return num_query_tokens * num_tiles_from_grid(grid_shape)
