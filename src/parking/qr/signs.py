"""Printable codes: the QR symbol with the lot's name and the place under it.

- SVG: vector, any size; the caption is text in the SVG (the printer's font).
- PNG: the same drawn with Pillow in a CJK font found on the machine (the bootstrap
  installs Debian's fonts-wqy-microhei); InvalidInput names the font if none is.
- PDF: an A6 sign (one code), or a sheet of many codes on A4 (a lot's spaces), drawn
  with ReportLab in its built-in Chinese font STSong-Light, so no font file is needed.

The symbol is segno's (error correction M, a 4-module quiet zone) in every format:
the PDF and PNG draw its module matrix, so a sign and a sheet carry the same code.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

import segno

from parking.errors import InvalidInput

BORDER: Final = 4
#: the line every sign ends with
SLOGAN: Final = "畅泊虔城　一次扫码 全市通停"
#: CJK fonts Pillow may draw the PNG's caption with, first found wins
FONT_FILES: Final = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
FORMATS: Final = (".svg", ".png", ".pdf")


@dataclass(frozen=True, slots=True)
class Sign:
    """One printed code: its URL and the two lines under it."""

    url: str
    title: str
    place: str


def caption(
    lot_name: str, kind: str, *, lane_id: str | None, direction: str | None, space_id: str | None
) -> str:
    """The line under the lot's name that says what to do here."""
    if kind == "lane" and lane_id is not None:
        if direction == "in":
            return f"入口 {lane_id}　无牌车扫码入场"
        return f"出口 {lane_id}　无牌车扫码出场"
    if kind == "space" and space_id is not None:
        return f"泊位 {space_id}　扫码停车缴费"
    return "扫码查看空位、收费标准与缴费"


def _matrix(url: str) -> list[bytearray]:
    symbol = segno.make(url, error="m", micro=False)
    size = len(symbol.matrix)
    blank = bytearray(size + 2 * BORDER)
    rows = [blank] * BORDER
    rows += [bytearray(BORDER) + bytearray(row) + bytearray(BORDER) for row in symbol.matrix]
    rows += [blank] * BORDER
    return rows


def svg(sign: Sign, *, module: int = 10) -> bytes:
    rows = _matrix(sign.url)
    width = len(rows) * module
    height = width + 5 * module
    path = "".join(
        f"M{x * module},{y * module}h{module}v{module}h-{module}z"
        for y, row in enumerate(rows)
        for x, dark in enumerate(row)
        if dark
    )
    font = 'font-family="WenQuanYi Micro Hei, Noto Sans CJK SC, PingFang SC, sans-serif"'
    text = (
        f'<text x="{width / 2}" y="{width + 1.5 * module}" text-anchor="middle" {font} '
        f'font-size="{1.6 * module}" font-weight="bold">{escape(sign.title)}</text>'
        f'<text x="{width / 2}" y="{width + 3.1 * module}" text-anchor="middle" {font} '
        f'font-size="{1.2 * module}">{escape(sign.place)}</text>'
        f'<text x="{width / 2}" y="{width + 4.4 * module}" text-anchor="middle" {font} '
        f'font-size="{0.9 * module}" fill="#555">{escape(SLOGAN)}</text>'
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><rect width="{width}" height="{height}" fill="#fff"/>'
        f'<path d="{path}" fill="#000"/>{text}</svg>\n'
    ).encode()


def font_file() -> str | None:
    return next((f for f in FONT_FILES if Path(f).exists()), None)


def png(sign: Sign, *, module: int = 10) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    found = font_file()
    if found is None:
        raise InvalidInput(
            "no Chinese font for the PNG's caption: install fonts-wqy-microhei "
            "(the bootstrap does), or write .svg or .pdf"
        )
    rows = _matrix(sign.url)
    width = len(rows) * module
    image = Image.new("L", (width, width + 5 * module), 255)
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(rows):
        for x, dark in enumerate(row):
            if dark:
                draw.rectangle(
                    (x * module, y * module, (x + 1) * module - 1, (y + 1) * module - 1), fill=0
                )
    for text, size, at, shade in (
        (sign.title, 1.6, 1.5, 0),
        (sign.place, 1.2, 3.1, 0),
        (SLOGAN, 0.9, 4.4, 85),
    ):
        font = ImageFont.truetype(found, int(size * module))
        draw.text((width / 2, width + at * module), text, font=font, fill=shade, anchor="ms")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _draw(canvas: object, sign: Sign, x: float, y: float, side: float) -> None:
    """A code of ``side`` points with its caption below, its top-left at (x, y)."""
    from reportlab.pdfgen.canvas import Canvas

    assert isinstance(canvas, Canvas)
    rows = _matrix(sign.url)
    module = side / len(rows)
    canvas.setFillGray(0)
    for r, row in enumerate(rows):
        for c, dark in enumerate(row):
            if dark:
                canvas.rect(x + c * module, y - (r + 1) * module, module, module, stroke=0, fill=1)
    middle = x + side / 2
    canvas.setFont("STSong-Light", side / 14)
    canvas.drawCentredString(middle, y - side - side / 12, sign.title)
    canvas.setFont("STSong-Light", side / 19)
    canvas.drawCentredString(middle, y - side - side / 6.5, sign.place)
    canvas.setFillGray(0.35)
    canvas.setFont("STSong-Light", side / 26)
    canvas.drawCentredString(middle, y - side - side / 4.5, SLOGAN)
    canvas.setFillGray(0)


def pdf(signs: Sequence[Sign], *, sheet: bool) -> bytes:
    """An A6 page per sign, or (``sheet``) 12 codes to an A4 page, 3 by 4."""
    from reportlab.lib.pagesizes import A4, A6
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen.canvas import Canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    out = io.BytesIO()
    page = A4 if sheet else A6
    canvas = Canvas(out, pagesize=page, invariant=True)
    canvas.setTitle(signs[0].title if signs else "codes")
    width, height = page
    if not sheet:
        for sign in signs:
            side = width * 0.8
            _draw(canvas, sign, (width - side) / 2, height - (height - side) / 4, side)
            canvas.showPage()
    else:
        columns, lines = 3, 4
        cell_w, cell_h = width / columns, height / lines
        side = min(cell_w * 0.8, cell_h * 0.62)
        for start in range(0, len(signs), columns * lines):
            for n, sign in enumerate(signs[start : start + columns * lines]):
                col, line = n % columns, n // columns
                x = col * cell_w + (cell_w - side) / 2
                y = height - line * cell_h - (cell_h - side) / 5
                _draw(canvas, sign, x, y, side)
            canvas.showPage()
    canvas.save()
    return out.getvalue()


def write(signs: Sequence[Sign], out: Path, *, module: int = 10) -> None:
    """One sign as .svg, .png or .pdf (A6); several only as a .pdf sheet."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput("the output file must end in .svg, .png or .pdf")
    if not signs:
        raise InvalidInput("no code to print")
    if suffix == ".pdf":
        out.write_bytes(pdf(signs, sheet=len(signs) > 1))
    elif len(signs) > 1:
        raise InvalidInput("several codes go on a PDF sheet: write .pdf")
    elif suffix == ".svg":
        out.write_bytes(svg(signs[0], module=module))
    else:
        out.write_bytes(png(signs[0], module=module))
