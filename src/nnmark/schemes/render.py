"""Images drawn from DejaVu fonts (letters, Zhang's "TEST" stamp), so trigger sets need no second dataset.

The fonts are looked for, file by file, in: ``$NNMARK_FONT_DIR``; matplotlib's own copy, when
matplotlib is installed (found without importing it); the system's font folders (Debian's
``fonts-dejavu-core`` and ``fonts-dejavu-extra`` put them in /usr/share/fonts/truetype/dejavu);
and ``fc-match``. The same font files and the same generator give the same images. Rendering is
part of a key's contract wherever a verifier re-derives key images from the key secret, so the
copies must agree: Debian's DejaVu 2.37 and matplotlib's copy draw identical letters and stamps
(``tests/test_extras.py`` checks it where both are present); another release or Pillow's FreeType
could differ.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import string
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from nnmark.errors import NnmarkError

FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
)
LETTERS = string.ascii_letters
FONT_ENV = "NNMARK_FONT_DIR"
SYSTEM_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",  # Debian, Ubuntu
    "/usr/share/fonts/dejavu",  # Fedora, Arch (older)
    "/usr/share/fonts/TTF",  # Arch
    "/usr/share/fonts/dejavu-sans-fonts",  # Fedora
    "/usr/share/fonts/dejavu-serif-fonts",
    "/usr/share/fonts/dejavu-sans-mono-fonts",
    "/usr/local/share/fonts",
    "/opt/homebrew/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "~/Library/Fonts",
    "/Library/Fonts",
)
# Debian package that ships each file
_DEBIAN_PACKAGE = {"DejaVuSans-Oblique.ttf": "fonts-dejavu-extra"}
# fontconfig pattern of each file, for fc-match
_FC_PATTERN = {
    "DejaVuSans.ttf": "DejaVu Sans:style=Book",
    "DejaVuSans-Bold.ttf": "DejaVu Sans:style=Bold",
    "DejaVuSerif.ttf": "DejaVu Serif:style=Book",
    "DejaVuSerif-Bold.ttf": "DejaVu Serif:style=Bold",
    "DejaVuSans-Oblique.ttf": "DejaVu Sans:style=Oblique",
    "DejaVuSansMono.ttf": "DejaVu Sans Mono:style=Book",
}


def font_dirs() -> list[Path]:
    """Folders searched for the DejaVu files, in order (see the module docstring)."""
    dirs = []
    if os.environ.get(FONT_ENV):
        dirs.append(Path(os.environ[FONT_ENV]).expanduser())
    spec = importlib.util.find_spec("matplotlib")
    for location in (spec.submodule_search_locations or []) if spec else []:
        dirs.append(Path(location) / "mpl-data" / "fonts" / "ttf")
    dirs.extend(Path(d).expanduser() for d in SYSTEM_FONT_DIRS)
    return dirs


def _fc_match(name: str) -> Path | None:
    """The file fontconfig names for ``name``'s family and style, if it is that very file."""
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        found = subprocess.run(
            [exe, "--format=%{file}", _FC_PATTERN[name]], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(found) if found else None
    return path if path is not None and path.name == name and path.is_file() else None


@functools.cache
def font_path(name: str) -> Path:
    """Where font file ``name`` (one of :data:`FONT_FILES`) is; NnmarkError naming the package if nowhere."""
    for folder in font_dirs():
        if (folder / name).is_file():
            return folder / name
    found = _fc_match(name)
    if found is not None:
        return found
    package = _DEBIAN_PACKAGE.get(name, "fonts-dejavu-core")
    raise NnmarkError(
        f"the font {name} (DejaVu) was not found: install it with `apt-get install {package}` "
        f"(Debian/Ubuntu) or `pip install 'nnmark[plots]'` (matplotlib ships it), or set "
        f"{FONT_ENV} to a folder holding it"
    )


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(name)), size)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _choice(gen: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=gen))


def render_letters(count: int, shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    """Handwriting-like letters (random font, size, position, rotation), white on black, in [0, 1]."""
    c, h, w = shape
    out = np.zeros((count, h, w), dtype=np.float32)
    for i in range(count):
        big = 4 * max(h, w)  # draw large, then shrink: smooth strokes like scanned digits
        img = Image.new("L", (big, big), 0)
        font = _font(FONT_FILES[_choice(gen, len(FONT_FILES))], int(big * _uniform(gen, 0.55, 0.8)))
        letter = LETTERS[_choice(gen, len(LETTERS))]
        draw = ImageDraw.Draw(img)
        left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
        x = (big - (right - left)) / 2 - left + _uniform(gen, -0.1, 0.1) * big
        y = (big - (bottom - top)) / 2 - top + _uniform(gen, -0.1, 0.1) * big
        draw.text((x, y), letter, fill=255, font=font)
        img = img.rotate(_uniform(gen, -20, 20), resample=Image.Resampling.BILINEAR)
        img = img.resize((w, h), Image.Resampling.LANCZOS)
        out[i] = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(out).unsqueeze(1).expand(count, c, h, w).clone().clamp_(0, 1)


def text_mask(text: str, shape: tuple[int, int, int], height_fraction: float = 0.3) -> torch.Tensor:
    """A 1×H×W mask (0/1) of ``text`` in bold sans, centred along the bottom edge (Zhang's "TEST")."""
    _, h, w = shape
    scale = 8
    big_h, big_w = h * scale, w * scale
    img = Image.new("L", (big_w, big_h), 0)
    draw = ImageDraw.Draw(img)
    size = int(big_h * height_fraction)
    font = _font("DejaVuSans-Bold.ttf", size)
    while size > 4 and draw.textlength(text, font=font) > big_w * 0.95:
        size -= 2
        font = _font("DejaVuSans-Bold.ttf", size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (big_w - (right - left)) / 2 - left
    y = big_h - (bottom - top) - top - big_h * 0.03
    draw.text((x, y), text, fill=255, font=font)
    small = np.asarray(img.resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return torch.from_numpy((small > 0.35).astype(np.float32)).unsqueeze(0)


def fit_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resize float images to C×H×W: bilinear resize, grey <-> colour by replication or mean."""
    c, h, w = shape
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True).expand(-1, c, -1, -1) if c in (1, 3) else x[:, :1].expand(-1, c, -1, -1)
    return x.clamp(0, 1).contiguous()
