"""Anyres tiling for Vision-Zephyr: best-fit grid of square tiles plus a low-resolution base view.

The grid arithmetic at the top of this file is shared with the model (which imports it relatively), so the number
of visual tokens per image is computed in exactly one place.

`VisionZephyrImageProcessor` reproduces the original's `process_any_resolution_image` bit for bit: the best-fit
canvas among the grid pinpoints, the image resized into it with LANCZOS and floor sizes, centred on black, cut
into `tile_size` tiles (row-major), after a base view that is the whole image squashed to `tile_size`² with LANCZOS,
then CLIP normalisation with the exact float32 arithmetic of transformers' CLIP image processor.

The LANCZOS resize is ours, not PIL's: an exact re-implementation of the 8-bit LANCZOS of Pillow 11.2.1, the
version the original ran (Pillow 13 changed the pass order and so the pixels), vectorised in torch so that the tiles
do not depend on the installed Pillow and can be computed on a GPU. PIL only decodes images and draws prompts.
"""

import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, select_best_resolution
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, load_image
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

from .visual_prompts import draw_visual_prompts


def anyres_grid_shape(image_size: tuple[int, int], grid_pinpoints: list[list[int]], tile_size: int) -> tuple[int, int]:
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


# The original config's pinpoints [[336, 672], [672, 336], [336, 1008], [1008, 336]] are (width, height); stored here
# as (height, width) in the same order, so that ties (square and tiny images) still pick the vertical 336x672 canvas.
ORIGINAL_GRID_PINPOINTS = [[672, 336], [336, 672], [1008, 336], [336, 1008]]

# Keyword arguments of `ImagesKwargs` that a fixed anyres tiler has no use for, with what to use instead.
UNSUPPORTED_KWARGS = {
    "size": "tiles are always `tile_size` squares; set `tile_size`",
    "crop_size": "tiles are always `tile_size` squares; set `tile_size`",
    "do_resize": "anyres always resizes",
    "do_center_crop": "anyres never crops",
    "do_pad": "the tile axis is always zero-padded to the batch's largest tile count",
    "pad_size": "the tile axis is always zero-padded to the batch's largest tile count",
}


class VisionZephyrImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    image_grid_pinpoints (`list[list[int]]`, *optional*):
        Candidate canvases as `(height, width)`, each a multiple of `tile_size`. The one that keeps the most of the
        image's resolution (then wastes the least) is chosen; earlier entries win ties.
    tile_size (`int`, *optional*, defaults to 336):
        Side of the square tiles (the vision tower's input size).
    max_tiles (`int`, *optional*):
        Token budget: the most tiles (base view included) an image may become, i.e. at most
        `max_tiles * num_query_tokens` visual tokens. Pinpoints that need more tiles are not considered.
    visual_prompts (`list[list[dict] | None]`, *optional*):
        One list of visual-prompt dicts (or `None`) per image, drawn onto the image before tiling; see
        `visual_prompts.py` for the schema. A single image may take its list of dicts directly.
    fast_resize (`bool`, *optional*, defaults to `False`):
        Resize with torch's antialiased bicubic on uint8 instead of the original's LANCZOS: several times faster on
        large images, but pixels differ from the original preprocessing by a few levels. Off by default.
    device (`str` or `torch.device`, *optional*):
        Where to resize, normalise and tile (e.g. `"cuda"`); with `return_tensors="pt"` the `pixel_values` stay
        there. Defaults to the CPU. The tiles are the same on every device.
    """

    image_grid_pinpoints: list[list[int] | tuple[int, int]] | None
    tile_size: int | None
    max_tiles: int | None
    visual_prompts: list[list[dict[str, Any]] | None] | list[dict[str, Any]] | None
    fast_resize: bool | None


class VisionZephyrImageProcessor(BaseImageProcessor):
    r"""
    Anyres image processor of Vision-Zephyr (see the module docstring). Accepts PIL images, numpy arrays and torch
    tensors (`(H, W)`, `(H, W, C)` or `(C, H, W)`, uint8, uint16 or floats in [0, 1]), paths and URLs, in any PIL
    mode; everything is converted to 8-bit RGB first, as the original's `Image.open(...).convert("RGB")` did (alpha
    is dropped, 16-bit images are scaled to 8 bits).

    Returns a `BatchFeature` with
    - `pixel_values`: float32 `(batch, max_tiles, 3, tile_size, tile_size)`, base view first, then the grid tiles
      row-major, zero-padded on the tile axis to the batch's largest tile count;
    - `image_sizes`: int64 `(batch, 2)`, `(height, width)` of the original images;
    - `image_grids`: int64 `(batch, 2)`, `(rows, cols)` of each image's grid, so the model needs no pinpoints when a
      call used its own `max_tiles` or `image_grid_pinpoints`.
    """

    model_input_names = ["pixel_values", "image_sizes", "image_grids"]
    valid_kwargs = VisionZephyrImageProcessorKwargs

    resample = PILImageResampling.LANCZOS
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    do_rescale = True
    do_normalize = True
    tile_size = 336
    image_grid_pinpoints = ORIGINAL_GRID_PINPOINTS
    fast_resize = False

    def __init__(self, **kwargs: Unpack[VisionZephyrImageProcessorKwargs]):
        super().__init__(**kwargs)
        self._set_attributes(**kwargs)

    def preprocess(self, images, **kwargs: Unpack[VisionZephyrImageProcessorKwargs]) -> BatchFeature:
        """Tiles a batch of images.

        Args:
            images (`ImageInput`):
                One image or a list (or a list of lists) of images.
            **kwargs:
                Any of `VisionZephyrImageProcessorKwargs`, e.g. `max_tiles`, `image_grid_pinpoints`,
                `visual_prompts`, `fast_resize`, `device`, `return_tensors`.

        Returns:
            `BatchFeature`: `pixel_values`, `image_sizes` and `image_grids` (see the class docstring).
        """
        check_visual_prompts_layout(kwargs.get("visual_prompts"))
        return super().preprocess(images, **kwargs)

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list[Image.Image]:
        return flatten_images(images)

    def process_image(self, image, input_data_format=None, **kwargs) -> Image.Image:
        return to_rgb_image(image, input_data_format)

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        for name, instead in UNSUPPORTED_KWARGS.items():
            if kwargs.get(name) is not None:
                raise ValueError(f"`{name}` is not used by {type(self).__name__}: {instead}.")
        tile_size = kwargs["tile_size"]
        if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size <= 0:
            raise ValueError(f"tile_size: expected a positive int, got {tile_size!r}")
        if kwargs["resample"] != PILImageResampling.LANCZOS:
            raise ValueError(f"resample: only LANCZOS (the original's) is implemented, got {kwargs['resample']!r}")
        super()._validate_preprocess_kwargs(**kwargs)

    def _preprocess(
        self,
        images: list[Image.Image],
        image_grid_pinpoints: list[list[int]],
        tile_size: int,
        max_tiles: int | None,
        visual_prompts: list | None,
        fast_resize: bool,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        device: str | torch.device | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        pinpoints = allowed_pinpoints(image_grid_pinpoints, tile_size, max_tiles)
        images = [
            image if prompts is None else draw_visual_prompts(image, prompts)
            for image, prompts in zip(images, prompts_per_image(visual_prompts, len(images)), strict=True)
        ]
        image_sizes = [(image.height, image.width) for image in images]
        image_grids = [anyres_grid_shape(size, pinpoints, tile_size) for size in image_sizes]
        device = torch_device(device)
        level_values = normalized_levels(
            rescale_factor if do_rescale else None, (image_mean, image_std) if do_normalize else None, device
        )
        max_tiles_in_batch = max(num_tiles_from_grid(grid) for grid in image_grids)
        # Zero padding on the tile axis comes for free from a zeroed buffer; tiles are normalised straight into it.
        pixel_values = torch.zeros(
            (len(images), max_tiles_in_batch, 3, tile_size, tile_size), dtype=torch.float32, device=device
        )
        for image, grid, out in zip(images, image_grids, pixel_values, strict=True):
            pixels = image_levels(image).to(device)
            tile_image(pixels, grid, tile_size, bicubic_resize if fast_resize else lanczos_resize, level_values, out)
        data = {
            "pixel_values": pixel_values if return_tensors == "pt" else pixel_values.cpu().numpy(),
            "image_sizes": np.array(image_sizes, dtype=np.int64),
            "image_grids": np.array(image_grids, dtype=np.int64),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


def allowed_pinpoints(
    image_grid_pinpoints: Sequence[Sequence[int]], tile_size: int, max_tiles: int | None
) -> list[list[int]]:
    """Validates `image_grid_pinpoints` and keeps those whose grid fits in `max_tiles` tiles (base view included).

    Raises:
        `ValueError` naming the argument when a pinpoint is not a positive multiple of `tile_size`, or when
        `max_tiles` leaves no pinpoint.
    """
    if not isinstance(image_grid_pinpoints, Sequence) or len(image_grid_pinpoints) == 0:
        raise ValueError(
            f"image_grid_pinpoints: expected a non-empty list of [height, width], got {image_grid_pinpoints!r}"
        )
    for pinpoint in image_grid_pinpoints:
        if (
            not isinstance(pinpoint, Sequence)
            or len(pinpoint) != 2
            or any(isinstance(side, bool) or not isinstance(side, int) or side <= 0 for side in pinpoint)
            or any(side % tile_size for side in pinpoint)
        ):
            raise ValueError(
                f"image_grid_pinpoints: every entry must be [height, width], positive multiples of tile_size="
                f"{tile_size}; got {list(pinpoint) if isinstance(pinpoint, Sequence) else pinpoint!r}"
            )
    pinpoints = [list(pinpoint) for pinpoint in image_grid_pinpoints]
    if max_tiles is None:
        return pinpoints
    if isinstance(max_tiles, bool) or not isinstance(max_tiles, int) or max_tiles <= 0:
        raise ValueError(f"max_tiles: expected a positive int, got {max_tiles!r}")
    tiles = [num_tiles_from_grid((height // tile_size, width // tile_size)) for height, width in pinpoints]
    kept = [pinpoint for pinpoint, count in zip(pinpoints, tiles, strict=True) if count <= max_tiles]
    if not kept:
        raise ValueError(
            f"max_tiles={max_tiles} leaves no grid: the smallest of image_grid_pinpoints={pinpoints} needs "
            f"{min(tiles)} tiles (base view included). Raise max_tiles or pass smaller image_grid_pinpoints."
        )
    return kept


def check_visual_prompts_layout(visual_prompts) -> None:
    """Rejects a `visual_prompts` argument of the wrong layout with a `TypeError` naming it.

    transformers' typed-kwargs check would reject it too, but with its own exception class; the contents of each
    prompt are checked by `visual_prompts.validate_visual_prompts`.
    """
    if visual_prompts is None:
        return
    entries_fit = isinstance(visual_prompts, list) and all(
        entry is None
        or isinstance(entry, dict)
        or (isinstance(entry, list) and all(isinstance(p, dict) for p in entry))
        for entry in visual_prompts
    )
    if not entries_fit:
        raise TypeError(
            "visual_prompts: expected a list with one list of prompt dicts (or None) per image, or a single image's "
            f"list of prompt dicts; got {visual_prompts!r:.80}"
        )


def prompts_per_image(visual_prompts: Sequence | None, num_images: int) -> list[Sequence[Mapping] | None]:
    """One entry (a list of prompt dicts, or `None`) per image; a single image may take its list of dicts directly."""
    if visual_prompts is None:
        return [None] * num_images
    if num_images == 1 and all(isinstance(prompt, Mapping) for prompt in visual_prompts):
        return [visual_prompts]
    if len(visual_prompts) != num_images:
        raise ValueError(
            f"visual_prompts: got {len(visual_prompts)} entries for {num_images} images; pass one list of prompt "
            "dicts (or None) per image, in the order of the images."
        )
    return list(visual_prompts)


def flatten_images(images) -> list:
    """A flat list of the images in `images` (an image, a path or URL, a 4-D batch, or nested lists of them)."""
    flat = list(_iterate_images(images))
    if not flat:
        raise ValueError("images: got no image, expected at least one")
    return flat


def _iterate_images(images):
    if isinstance(images, (list, tuple)):
        for entry in images:
            yield from _iterate_images(entry)
    elif isinstance(images, str):
        yield open_image_source(images)
    elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        yield from images
    elif isinstance(images, (Image.Image, np.ndarray, torch.Tensor)):
        yield images
    else:
        raise TypeError(
            "images: expected a PIL image, numpy array, torch tensor, path or URL (or a list of them), "
            f"got {type(images).__name__}"
        )


def open_image_source(source: str) -> Image.Image:
    """Opens a local file, an http(s) URL or base64 image data, upright (EXIF orientation applied), in its own mode.

    Local files are opened here rather than by transformers' `load_image`, which converts to RGB straight away and
    so clips 16-bit images; `to_rgb_image` does that conversion instead.

    Raises:
        `ValueError` naming `images` when the source is missing, unreadable (truncated, not an image), or has more
        pixels than PIL's decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS`.
    """
    shown = source if len(source) <= 80 else f"{source[:77]}..."
    try:
        if not os.path.isfile(source):
            return load_image(source)  # URL or base64: transformers' loader, already upright and RGB
        with Image.open(source) as opened:
            if Image.MAX_IMAGE_PIXELS and opened.width * opened.height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(
                    f"{opened.width}x{opened.height} pixels is more than PIL.Image.MAX_IMAGE_PIXELS="
                    f"{Image.MAX_IMAGE_PIXELS}"
                )
            image = ImageOps.exif_transpose(opened)
            image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"images: {shown!r} is too large to decode safely ({error}); downscale it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from error
    except (OSError, ValueError) as error:
        raise ValueError(
            f"images: cannot read an image from {shown!r}; expected an existing image file, an http(s) URL or "
            f"base64 image data ({type(error).__name__}: {error})"
        ) from error
    return image


def to_rgb_image(image, input_data_format: str | None = None) -> Image.Image:
    """Converts one image to an 8-bit RGB PIL image.

    Args:
        image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`):
            Any PIL mode; arrays `(H, W)`, `(H, W, C)` or `(C, H, W)` with 1, 3 or 4 channels, uint8, uint16 or
            floats in [0, 1].
        input_data_format (`str`, *optional*):
            `"channels_first"` or `"channels_last"` for arrays whose layout is ambiguous; by default numpy arrays
            are read as `(H, W, C)` and torch tensors as `(C, H, W)` when both would fit.

    Returns:
        `PIL.Image.Image`: An RGB image (the same object when it already was one). Alpha is dropped, as PIL's
        `convert("RGB")` does; 16-bit values are scaled to 8 bits.
    """
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"images: got an empty image of size {image.size}")
        try:
            image.load()  # an opened file decodes lazily: report a truncated or corrupt one here
        except OSError as error:
            raise ValueError(f"images: cannot decode the image ({error}); the file is truncated or corrupt") from error
        if image.mode == "RGB":
            return image
        if image.mode.startswith("I"):  # 16/32-bit integer: PIL's own conversion would clip at 255.
            return to_rgb_image(np.clip(np.asarray(image), 0, 65535).astype(np.uint16))
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        pixels = image.detach().cpu()
        pixels = pixels.float() if pixels.is_floating_point() else pixels
        return rgb_from_array(pixels.numpy(), input_data_format or "channels_first")
    if isinstance(image, np.ndarray):
        return rgb_from_array(image, input_data_format or "channels_last")
    raise TypeError(f"images: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")


def rgb_from_array(pixels: np.ndarray, preferred_layout: str) -> Image.Image:
    """An RGB PIL image from an `(H, W)`, `(H, W, C)` or `(C, H, W)` array; see `to_rgb_image`."""
    shape = pixels.shape
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    elif pixels.ndim == 3 and not channels_are_last(shape, preferred_layout):
        pixels = np.moveaxis(pixels, 0, -1)
    elif pixels.ndim != 3:
        raise ValueError(f"images: expected an array of shape (H, W), (H, W, C) or (C, H, W), got {shape}")
    height, width, channels = pixels.shape
    if channels not in (1, 3, 4):
        raise ValueError(f"images: expected 1, 3 or 4 channels, got an array of shape {shape}")
    if height == 0 or width == 0:
        raise ValueError(f"images: got an empty image of shape {shape}")
    pixels = to_uint8(pixels)
    rgb = np.repeat(pixels, 3, axis=-1) if channels == 1 else pixels[..., :3]
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def channels_are_last(shape: tuple[int, ...], preferred_layout: str) -> bool:
    """Whether a 3-D array is `(H, W, C)`: the preferred layout wins when both ends could be channels."""
    last_fits, first_fits = shape[-1] in (1, 3, 4), shape[0] in (1, 3, 4)
    if preferred_layout == "channels_last":
        return last_fits or not first_fits
    return last_fits and not first_fits


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Maps uint8 / uint16 / other integers in [0, 255] / floats in [0, 1] to uint8."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return (pixels >> 8).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(
                f"images: float images must hold values in [0, 1], got range [{pixels.min()}, {pixels.max()}]"
            )
        return np.round(pixels * 255).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.integer) and pixels.min() >= 0 and pixels.max() <= 255:
        return pixels.astype(np.uint8)
    raise ValueError(
        f"images: expected uint8, uint16, integers in [0, 255] or floats in [0, 1], got dtype {pixels.dtype}"
    )


def image_levels(image: Image.Image) -> torch.Tensor:
    """An RGB image's `(H, W, 3)` uint8 levels, read-only: they share PIL's bytes, where `np.array` would copy them
    once more (11 ms of a 12-megapixel photo here)."""
    levels = np.asarray(image)
    with warnings.catch_warnings():
        # Only read: the resizes and the tiler never write to their input.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(levels)


def torch_device(device: str | torch.device | None) -> torch.device:
    """The `device` argument as a `torch.device` (the CPU when `None`), or a `ValueError` naming it."""
    try:
        return torch.device(device or "cpu")
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda', got {device!r}") from error


def tile_image(
    pixels: torch.Tensor, grid: tuple[int, int], tile_size: int, resize, level_values: torch.Tensor, out: torch.Tensor
) -> None:
    """Writes the base view and the grid tiles of an `(H, W, 3)` uint8 image, normalised, into `out`.

    `out` is `(tiles, 3, tile_size, tile_size)` float32; `resize` is `lanczos_resize` or `bicubic_resize`,
    `level_values` the `(3, 256)` table of `normalized_levels`.
    """
    height, width, _ = pixels.shape
    rows, cols = grid
    canvas_height, canvas_width = rows * tile_size, cols * tile_size
    scale = min(canvas_width / width, canvas_height / height)
    # Floor sizes as the original; the original crashed when a side floored to 0 (e.g. 1x2000 images), keep 1 px.
    new_height, new_width = max(int(height * scale), 1), max(int(width * scale), 1)
    base_view, resized = resize(pixels, [(tile_size, tile_size), (new_height, new_width)])
    # The original pads the resized image with black (level 0) to fill the canvas.
    canvas = torch.zeros(canvas_height, canvas_width, 3, dtype=torch.uint8, device=pixels.device)
    top, left = (canvas_height - new_height) // 2, (canvas_width - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = resized
    tiles = canvas.view(rows, tile_size, cols, tile_size, 3).transpose(1, 2).flatten(0, 1)
    for levels, tile_out in zip([base_view, *tiles], out[: 1 + rows * cols], strict=True):
        write_normalized(levels, level_values, tile_out)


def normalized_levels(
    rescale_factor: float | None, mean_std: tuple[Sequence[float], Sequence[float]] | None, device: torch.device
) -> torch.Tensor:
    """`(3, 256)` float32: the value of each 8-bit level in each channel, with the original's arithmetic
    (transformers' CLIP image processor): rescale in float64, cast to float32, then `(x - mean) / std` in float32.

    Every output value is one of these 768, so normalising is a table lookup with the same bits."""
    levels = torch.arange(256, dtype=torch.float64, device=device).expand(3, 256)
    values = (levels * rescale_factor if rescale_factor is not None else levels).to(torch.float32)
    if mean_std is None:
        return values
    mean, std = (torch.tensor(stat, dtype=torch.float32, device=device)[:, None] for stat in mean_std)
    return (values - mean) / std


def write_normalized(levels: torch.Tensor, level_values: torch.Tensor, out: torch.Tensor) -> None:
    """Writes `(H, W, 3)` uint8 `levels` as `(3, H, W)` values of the `(3, 256)` table `level_values` into `out`."""
    for channel, values in enumerate(level_values):
        torch.index_select(values, 0, levels[..., channel].flatten().to(torch.int32), out=out[channel].view(-1))


def bicubic_resize(pixels: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Torch's antialiased bicubic on uint8 (see `fast_resize`), in `lanczos_resize`'s form."""
    channels_first = pixels.permute(2, 0, 1).unsqueeze(0)  # channels-last memory, the layout of torch's SIMD path
    return [
        torch.nn.functional.interpolate(channels_first, size=size, mode="bicubic", antialias=True)[0].permute(1, 2, 0)
        for size in sizes
    ]


# Pillow's 8-bit resampling (libImaging/Resample.c of Pillow 11.2.1): weights in fixed point with 22 fractional bits,
# sums in int32 starting at 2^21 (rounding), shifted right by 22 and clamped to 0..255 after each pass.
PRECISION_BITS = 22
LANCZOS_SUPPORT = 3.0
# Outputs per dense weight block: each block reads one window of inputs; the size with the least work is chosen.
# Small sizes are kept: a block whose advance is a whole number of inputs (7 outputs per 20 inputs at 1920->672)
# does not drift, so its window stays narrow (measured: 1920x1080 resized 12 % faster than with 8-16 only).
BLOCK_SIZES = range(4, 17)
# Columns per batched matmul on CPU: narrower calls are dominated by overhead, wider ones fall out of the cache
# (measured on a 2-core AMD EPYC: 25-32 GFLOP/s at 48-144 columns, 12 at 350). Other devices take all at once.
CPU_COLUMNS_PER_CALL = 128


def lanczos_resize(pixels: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Pillow 11.2.1's `Image.resize(..., LANCZOS)` of an 8-bit image, bit for bit, to each `(height, width)`.

    Separable as Pillow: the horizontal pass first (skipped when the width does not change), its output rounded to
    8 bits, then the vertical pass. The fixed-point sums are float64 matmuls over dense blocks of the banded weight
    matrix; they are exact, because every partial sum is an integer multiple of 2^-22 below 2^9.

    Args:
        pixels (`torch.Tensor`): `(H, W, C)` uint8, on any device.
        sizes (`Sequence[tuple[int, int]]`): output sizes; resizes of one image share the reading of its pixels.

    Returns:
        `list[torch.Tensor]`: per size, `(height, width, C)` uint8.
    """
    height, width, channels = pixels.shape
    row_plans = [axis_plan(height, out_height, pixels.device) for out_height, _ in sizes]
    # The horizontal passes' outputs are 8-bit (Pillow rounds between the passes): uint8 keeps them 8x smaller than
    # float64, which matters on CPU, where every fresh multi-MB buffer is paid in page faults.
    resized_rows = [
        torch.empty(plan.padded_length, out_width, channels, dtype=torch.uint8, device=pixels.device)
        for plan, (_, out_width) in zip(row_plans, sizes, strict=True)
    ]
    for plan, rows in zip(row_plans, resized_rows, strict=True):
        rows[: plan.pad_before].zero_()
        rows[plan.pad_before + height :].zero_()
    resize_width(
        pixels,
        [rows[plan.pad_before : plan.pad_before + height] for plan, rows in zip(row_plans, resized_rows, strict=True)],
    )
    return [
        plan.apply(rows.flatten(1)).view(plan.out_size, -1, channels)
        for plan, rows in zip(row_plans, resized_rows, strict=True)
    ]


def resize_width(pixels: torch.Tensor, outputs: list[torch.Tensor]) -> None:
    """The horizontal passes of `lanczos_resize` into `outputs`, `(H, width, C)` uint8 each.

    The image is read in strips of rows, transposed to `(W, C, rows)` float64, so that the strip stays in the cache
    and each pass is a matmul over its leading axis, shared by all output widths.
    """
    height, width, channels = pixels.shape
    plans = [axis_plan(width, output.shape[1], pixels.device) for output in outputs]
    pad_before, pad_after = max(plan.pad_before for plan in plans), max(plan.pad_after for plan in plans)
    strip_rows = height if pixels.device.type != "cpu" else min(max(CPU_COLUMNS_PER_CALL // channels, 1), height)
    strip = torch.zeros(
        pad_before + width + pad_after, channels, strip_rows, dtype=torch.float64, device=pixels.device
    )
    for top in range(0, height, strip_rows):
        rows = min(strip_rows, height - top)
        strip[pad_before : pad_before + width, :, :rows] = pixels[top : top + rows].permute(1, 2, 0)
        for plan, output in zip(plans, outputs, strict=True):
            resized = plan.apply(strip[pad_before - plan.pad_before :].flatten(1))
            output[top : top + rows] = resized.view(-1, channels, strip_rows)[..., :rows].permute(2, 0, 1)


@dataclass(frozen=True)
class AxisPlan:
    """How one axis of length `in_size` is resized to `out_size`: the banded fixed-point weight matrix of Pillow's
    LANCZOS cut into `(num_blocks, block, span)` dense blocks (weights / 2^22), block `b` reading inputs
    `[b * step + offset, b * step + offset + span)` of the input zero-padded by `pad_before` and `pad_after`.
    A plan of an unchanged size is the identity (Pillow skips that pass)."""

    weights: torch.Tensor | None
    in_size: int
    out_size: int
    step: int = 1
    offset: int = 0
    span: int = 1

    @property
    def pad_before(self) -> int:
        return max(-self.offset, 0)

    @property
    def pad_after(self) -> int:
        if self.weights is None:
            return 0
        return max(self.offset + (len(self.weights) - 1) * self.step + self.span - self.in_size, 0)

    @property
    def padded_length(self) -> int:
        return self.pad_before + self.in_size + self.pad_after

    def apply(self, padded: torch.Tensor) -> torch.Tensor:
        """`(padded_length or more, N)` levels (uint8, or float64 holding integers) -> `(out_size, N)` uint8, resized
        along the leading axis."""
        if self.weights is None:
            return padded[self.pad_before : self.pad_before + self.in_size].to(torch.uint8)
        start = self.pad_before + self.offset
        windows = padded[start : start + (len(self.weights) - 1) * self.step + self.span]
        out = torch.empty(self.out_size, padded.shape[1], dtype=torch.uint8, device=padded.device)
        columns = CPU_COLUMNS_PER_CALL if padded.device.type == "cpu" else padded.shape[1]
        for left in range(0, padded.shape[1], columns):
            levels = windows[:, left : left + columns].to(torch.float64)
            blocks = levels.unfold(0, self.span, self.step).transpose(1, 2)
            sums = torch.bmm(self.weights, blocks).flatten(0, 1)[: self.out_size]
            # Rounds half up as Pillow: the cast to uint8 truncates, which is the floor once clamped to 0..255.
            out[:, left : left + columns] = sums.add_(0.5).clamp_(0, 255)
        return out


class LanczosTaps(NamedTuple):
    """Per output pixel: `first` input pixel, `count` of inputs read and `fixed` `(out_size, max count)` fixed-point
    weights, zero past `count`."""

    first: np.ndarray
    count: np.ndarray
    fixed: np.ndarray

    @property
    def in_window(self) -> np.ndarray:
        return np.arange(self.fixed.shape[1]) < self.count[:, None]


@functools.lru_cache(maxsize=64)
def axis_plan(in_size: int, out_size: int, device: torch.device) -> AxisPlan:
    """The `AxisPlan` of one axis, cached: a stream of same-size images computes its weights once."""
    if in_size == out_size:
        return AxisPlan(None, in_size, out_size)
    taps = lanczos_taps(in_size, out_size)
    block = min(BLOCK_SIZES, key=lambda size: block_layout(taps, size, in_size)[-1])
    step, offset, span, _ = block_layout(taps, block, in_size)
    outputs, tap_index = np.nonzero(taps.in_window)
    columns = taps.first[outputs] - outputs // block * step - offset + tap_index
    weights = np.zeros((out_size + -out_size % block, span))
    weights[outputs, columns] = taps.fixed[outputs, tap_index]
    weights = torch.from_numpy(weights / (1 << PRECISION_BITS)).view(-1, block, span).to(device)
    return AxisPlan(weights, in_size, out_size, step, offset, span)


def block_layout(taps: LanczosTaps, block: int, in_size: int) -> tuple[int, int, int, int]:
    """`(step, offset, span, work)` of cutting `taps` into blocks of `block` outputs read at a constant `step`.

    The step is the block's average advance; windows drift from it by the rounding, which widens `span`, so the
    block size decides how much of each window is zeros. `work` counts the multiply-adds per input column.
    """
    out_size = len(taps.first)
    num_blocks = -(-out_size // block)
    step = max(round(block * in_size / out_size), 1)
    block_starts = np.arange(num_blocks) * step
    block_ends = np.maximum.reduceat(taps.first + taps.count, np.arange(0, out_size, block))
    offset = int((taps.first[::block] - block_starts).min())
    span = int((block_ends - block_starts).max()) - offset
    return step, offset, span, num_blocks * block * span


def lanczos_taps(in_size: int, out_size: int) -> LanczosTaps:
    """Pillow 11.2.1's `precompute_coeffs` and `normalize_coeffs_8bpc`, for all output pixels at once: the same
    double-precision operations in the same order (the weights' sum taken tap by tap, as C does), so the same bits."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filter_scale
    centers = (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(centers + support + 0.5).astype(np.int64), in_size) - first
    tap_index = np.arange(count.max())
    in_window = tap_index < count[:, None]
    weights = lanczos_kernel(((first[:, None] + tap_index) - centers[:, None] + 0.5) * (1.0 / filter_scale))
    weights[~in_window] = 0.0
    total = np.zeros(out_size)
    for column in weights.T:
        total = total + column
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0.0)
    fixed = np.trunc(weights * (1 << PRECISION_BITS) + np.where(weights >= 0, 0.5, -0.5)).astype(np.int64)
    return LanczosTaps(first, count, fixed)


def lanczos_kernel(x: np.ndarray) -> np.ndarray:
    """Pillow's `lanczos_filter`: sinc(x) * sinc(x / 3) on [-3, 3), zero elsewhere.

    Evaluated once per distinct value: the taps of a common ratio repeat (1920 -> 672: 500 distinct values among
    12,096 taps), and `sinc`'s Python call per value is most of a plan's time."""
    distinct, where = np.unique(x, return_inverse=True)
    values = np.where(
        (distinct >= -LANCZOS_SUPPORT) & (distinct < LANCZOS_SUPPORT), sinc(distinct) * sinc(distinct / 3), 0.0
    )
    return values[where].reshape(x.shape)


def sinc(x: np.ndarray) -> np.ndarray:
    """sin(pi x) / (pi x), with C's `sin` (`math.sin`): numpy's vectorized sine may differ from it in the last bit,
    which can flip a weight's fixed-point rounding."""
    scaled = x * math.pi
    sines = np.fromiter(map(math.sin, scaled.ravel().tolist()), dtype=np.float64, count=scaled.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0.0, 1.0, sines.reshape(x.shape) / scaled)


VisionZephyrImageProcessor.register_for_auto_class("AutoImageProcessor")
