"""Image safety: path containment, guarded decoding, RGB conversion, resizing."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines.core.images import ImageRejected, decode_image, encode_png, resize_max_pixels, safe_resolve, to_rgb
from tests.badinputs import huge_png_header, mode_images

BIG = 10**12  # a pixel limit that never triggers


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _reason(fn, *args) -> str:
    with pytest.raises(ImageRejected) as e:
        fn(*args)
    assert e.value.detail, "every rejection says why"
    return e.value.reason


# -- safe_resolve ---------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"s")
    os.symlink(tmp_path / "secret.png", root / "out_link.png")
    os.symlink(root / "sub" / "a.png", root / "in_link.png")
    os.symlink(tmp_path, root / "dir_link")
    return tmp_path, root


def test_safe_resolve_accepts_paths_inside_the_root(tree):
    tmp, root = tree
    real = (root / "sub" / "a.png").resolve()
    assert safe_resolve(root, "sub/a.png") == real
    assert safe_resolve(root, "sub/../sub/./a.png") == real
    assert safe_resolve(root, "in_link.png") == real  # a symlink that stays inside is fine
    assert safe_resolve(root, str(root / "sub" / "a.png")) == real  # absolute, but inside the root
    assert safe_resolve(root, "sub/missing.png") == (root / "sub" / "missing.png").resolve()  # existence not checked


@pytest.mark.parametrize(
    "rel",
    ["../secret.png", "sub/../../secret.png", "out_link.png", "dir_link/secret.png", "ABS", "/etc/passwd", "a\x00b"],
)
def test_safe_resolve_rejects_escapes(tree, rel):
    tmp, root = tree
    rel = str(tmp / "secret.png") if rel == "ABS" else rel
    assert _reason(safe_resolve, root, rel) == "path_escape"


def test_safe_resolve_empty_path_is_missing(tree):
    assert _reason(safe_resolve, tree[1], "") == "missing_image"


def test_safe_resolve_through_a_symlinked_root(tree):
    tmp, root = tree
    os.symlink(root, tmp / "root_link")
    assert safe_resolve(tmp / "root_link", "sub/a.png") == (root / "sub" / "a.png").resolve()
    assert _reason(safe_resolve, tmp / "root_link", "../secret.png") == "path_escape"


# -- decode_image: rejections ---------------------------------------------------------------------


def test_decode_rejects_broken_bytes():
    good = _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)))
    assert _reason(decode_image, b"", BIG) == "empty_image"
    assert _reason(decode_image, good[: len(good) // 2], BIG) == "truncated_image"
    assert _reason(decode_image, good[:20], BIG) == "unreadable_image"  # header cut: not identifiable
    assert _reason(decode_image, b"GIF89a not really", BIG) == "unreadable_image"
    assert _reason(decode_image, b"plain text\n" * 10, BIG) == "unreadable_image"


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # The header claims 3000x3000 but the pixel data is garbage: only a header check can say too_many_pixels.
    data = huge_png_header(3000, 3000)
    assert _reason(decode_image, data, 3000 * 3000 - 1) == "too_many_pixels"
    # At exactly the limit the header passes, and decoding then fails on the missing pixel data.
    assert _reason(decode_image, data, 3000 * 3000) in {"truncated_image", "unreadable_image"}


def test_pil_decompression_bomb_guard_is_mapped():
    # 20000^2 exceeds PIL's own hard limit: PIL raises during open, even with a huge configured limit.
    assert _reason(decode_image, huge_png_header(20000, 20000), BIG) == "too_many_pixels"


def test_real_image_over_the_limit():
    data = _png(Image.new("RGB", (30, 20), (1, 2, 3)))
    assert _reason(decode_image, data, 599) == "too_many_pixels"
    assert decode_image(data, 600).size == (30, 20)


# -- decode_image: conversions --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(mode_images()))
def test_every_mode_becomes_rgb(name):
    data = mode_images()[name]
    img = decode_image(data, BIG)
    assert img.mode == "RGB"
    assert img.size == Image.open(io.BytesIO(data)).size


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.array([[0, 257 * 100, 65535, 257 * 200]], dtype=np.uint16)
    img = decode_image(_png(Image.fromarray(arr)), BIG)
    assert np.asarray(img)[0, :, 0].tolist() == [0, 100, 255, 200]
    i32 = Image.fromarray(np.array([[0, 257 * 50, 65535]], dtype=np.int32))  # mode "I"
    assert i32.mode == "I"
    assert np.asarray(to_rgb(i32))[0, :, 1].tolist() == [0, 50, 255]


def test_alpha_is_composited_on_white():
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 0] = (10, 20, 30, 0)  # fully transparent -> white
    arr[0, 1] = (10, 20, 30, 255)  # opaque -> unchanged
    arr[1, 0] = (0, 0, 0, 128)  # half black over white -> mid gray
    out = np.asarray(decode_image(_png(Image.fromarray(arr)), BIG))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]
    assert 120 <= out[1, 0, 0] <= 135
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))
    la.putpixel((1, 0), (0, 255))
    assert np.asarray(decode_image(_png(la), BIG))[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_palette_transparency_and_grayscale():
    pal = Image.new("P", (2, 1))
    pal.putpalette([200, 0, 0] + [0, 0, 200] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    out = np.asarray(decode_image(_png(pal, transparency=0), BIG))
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent index -> white, not its palette red
    assert out[0, 1].tolist() == [0, 0, 200]
    gray = np.asarray(decode_image(_png(Image.fromarray(np.array([[7, 250]], dtype=np.uint8))), BIG))
    assert gray[0].tolist() == [[7, 7, 7], [250, 250, 250]]
    bilevel = np.asarray(decode_image(_png(Image.fromarray(np.array([[True, False]]))), BIG))
    assert bilevel[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_cmyk_converts():
    buf = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buf, format="JPEG", quality=95)  # pure red in CMYK
    r, g, b = np.asarray(decode_image(buf.getvalue(), BIG))[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue(), BIG).size == (20, 40)


def test_float_mode_is_rescaled():
    f = Image.fromarray(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32))
    assert f.mode == "F"
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]


# -- encode / resize ------------------------------------------------------------------------------


def test_encode_png_round_trips_and_is_deterministic():
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (9, 13, 3), dtype=np.uint8))
    data = encode_png(img)
    assert data == encode_png(img.copy())
    back = Image.open(io.BytesIO(data))
    assert back.format == "PNG" and np.array_equal(np.asarray(back), np.asarray(img))


def test_resize_leaves_small_images_alone():
    img = Image.new("RGB", (10, 10))
    assert resize_max_pixels(img, 100) is img


@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 600), h=st.integers(1, 600), max_pixels=st.integers(1, 40_000))
def test_resize_bounds_pixels_and_keeps_aspect(w, h, max_pixels):
    out = resize_max_pixels(Image.new("RGB", (w, h)), max_pixels)
    ow, oh = out.size
    assert ow >= 1 and oh >= 1
    if w * h > max_pixels:
        assert ow * oh <= max_pixels
        # Aspect kept up to the rounding of one pixel on each side (when neither side collapsed to 1).
        if ow > 1 and oh > 1:
            assert abs(ow / oh - w / h) <= (w / h) * (1 / oh + 1 / ow) + 1e-9
        # And not needlessly small: at least ~half the allowed pixels unless a side hit 1.
        if ow > 2 and oh > 2:
            assert ow * oh >= max_pixels * 0.4
    else:
        assert (ow, oh) == (w, h)
