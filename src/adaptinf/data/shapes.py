"""Tiny scenes of coloured shapes on a black 32×32 canvas, and their rendering.

Shapes sit on an 8-pixel grid (one 8×8 cell, or a 16×16 block of 2×2 cells) so that the
answers derived from a scene (a colour, a count, a box, a position) are exact and learnable
by a model with 8×8 patches. Colours are jittered per shape so no two images are identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
CELL = 8
CELLS = IMAGE_SIZE // CELL  # 4×4 grid

# Well-separated base colours; a model must still tell them apart after jitter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (230, 210, 40),
    "purple": (165, 60, 215),
    "white": (235, 235, 235),
}
# ASCII only, to keep a character-level vocabulary small.
FRENCH_COLOURS: dict[str, str] = {
    "red": "rouge", "green": "vert", "blue": "bleu",
    "yellow": "jaune", "purple": "violet", "white": "blanc",
}
KINDS: tuple[str, ...] = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    x: int  # top-left corner in pixels, a multiple of CELL
    y: int
    size: int  # CELL or 2 * CELL
    rgb: tuple[int, int, int]  # the jittered colour actually drawn

    @property
    def box(self) -> tuple[int, int, int, int]:
        """[x1, y1, x2, y2] of the cell block the shape occupies (x2, y2 exclusive)."""
        return (self.x, self.y, self.x + self.size, self.y + self.size)

    @property
    def cells(self) -> set[tuple[int, int]]:
        n = self.size // CELL
        cx, cy = self.x // CELL, self.y // CELL
        return {(cx + i, cy + j) for i in range(n) for j in range(n)}


Scene = tuple[Shape, ...]


def jittered_rgb(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """The base colour dimmed a little and nudged per channel: same name, different pixels."""
    scale = rng.uniform(0.8, 1.0)
    offset = rng.integers(-12, 13, size=3)
    base = np.asarray(COLOURS[colour], dtype=np.float64)
    rgb = np.clip(np.rint(base * scale) + offset, 0, 255).astype(int)
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _free_corners(size: int, occupied: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Top-left cells where a block of `size` pixels fits without touching occupied cells."""
    n = size // CELL
    corners = []
    for cy in range(CELLS - n + 1):
        for cx in range(CELLS - n + 1):
            block = {(cx + i, cy + j) for i in range(n) for j in range(n)}
            if not block & occupied:
                corners.append((cx, cy))
    return corners


def place_shapes(rng: np.random.Generator, sizes: list[int], colours: list[str] | None = None,
                 kinds: list[str] | None = None) -> Scene:
    """Non-overlapping shapes on the grid; a 16-pixel shape that no longer fits becomes 8."""
    occupied: set[tuple[int, int]] = set()
    shapes = []
    for i, size in enumerate(sizes):
        corners = _free_corners(size, occupied)
        if not corners and size > CELL:
            size, corners = CELL, _free_corners(CELL, occupied)
        if not corners:
            raise ValueError(f"no room for {len(sizes)} shapes on a {CELLS}x{CELLS} grid")
        cx, cy = corners[int(rng.integers(len(corners)))]
        colour = colours[i] if colours else str(rng.choice(list(COLOURS)))
        kind = kinds[i] if kinds else str(rng.choice(KINDS))
        shape = Shape(kind, colour, cx * CELL, cy * CELL, size, jittered_rgb(colour, rng))
        occupied |= shape.cells
        shapes.append(shape)
    return tuple(shapes)


def single_shape(rng: np.random.Generator, size: int | None = None) -> Scene:
    """One shape of random kind and colour; random size (8 or 16) unless given."""
    if size is None:
        size = CELL * int(rng.integers(1, 3))
    return place_shapes(rng, [size])


def position_name(shape: Shape) -> str:
    """'top left', 'centre', 'bottom', ... from the shape's centre in thirds of the image."""
    def third(c: float, low: str, high: str) -> str:
        return low if c < IMAGE_SIZE / 3 else high if c > 2 * IMAGE_SIZE / 3 else ""

    cx, cy = shape.x + shape.size / 2, shape.y + shape.size / 2
    parts = [p for p in (third(cy, "top", "bottom"), third(cx, "left", "right")) if p]
    return " ".join(parts) or "centre"


def _draw(draw: ImageDraw.ImageDraw, s: Shape) -> None:
    # Inset by one pixel so neighbouring shapes of one colour stay separate blobs.
    x0, y0 = s.x + 1, s.y + 1
    x1, y1 = s.x + s.size - 2, s.y + s.size - 2  # PIL coordinates are inclusive
    if s.kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=s.rgb)
    elif s.kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=s.rgb)
    elif s.kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=s.rgb)
    else:
        raise ValueError(f"unknown shape kind {s.kind!r}")


def render(scene: Scene, noise_rng: np.random.Generator | None = None, noise: int = 0) -> Image.Image:
    """The scene as a 32×32 RGB image; `noise` > 0 adds ±noise per pixel (near-duplicates)."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for shape in scene:
        _draw(draw, shape)
    if noise_rng is not None and noise > 0:
        pixels = np.asarray(img, dtype=np.int16)
        pixels = pixels + noise_rng.integers(-noise, noise + 1, size=pixels.shape)
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return img
