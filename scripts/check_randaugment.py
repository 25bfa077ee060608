"""PIL's side of the RandAugment check: each operation of lgreg's RandAugment (`TRAIN.AA`),
called the way timm's RandAugment calls PIL (bicubic resampling, fill 128, ImageOps and
ImageEnhance), on random grey and RGB images. Writes the cases, inputs and PIL's outputs as
JSON; the integration test `randaugment_pil` applies lgreg's operations to the same inputs and
requires identical bytes.

Usage: python3 scripts/check_randaugment.py OUT.json   (needs Pillow)"""
import json, random, sys

from PIL import Image, ImageEnhance, ImageOps

FILL = 128


def solarize_add(img, add):
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def affine(matrix):
    def run(img, _):
        fill = FILL if img.mode == "L" else (FILL,) * 3
        return img.transform(img.size, Image.AFFINE, matrix(img), resample=Image.BICUBIC, fillcolor=fill)
    return run


def rotate(img, degrees):
    fill = FILL if img.mode == "L" else (FILL,) * 3
    return img.rotate(degrees, resample=Image.BICUBIC, fillcolor=fill)


OPS = {
    "AutoContrast": ([0], lambda img, _: ImageOps.autocontrast(img)),
    "Equalize": ([0], lambda img, _: ImageOps.equalize(img)),
    "Invert": ([0], lambda img, _: ImageOps.invert(img)),
    "Rotate": ([-27.0, 13.5, 30.0], rotate),
    "Posterize": ([1, 2, 4], lambda img, b: ImageOps.posterize(img, int(b))),
    "Solarize": ([256, 180, 23], lambda img, t: ImageOps.solarize(img, int(t))),
    "SolarizeAdd": ([0, 49, 110], lambda img, a: solarize_add(img, int(a))),
    "Color": ([0.19, 1.0, 1.81], lambda img, f: ImageEnhance.Color(img).enhance(f)),
    "Contrast": ([0.19, 1.0, 1.81], lambda img, f: ImageEnhance.Contrast(img).enhance(f)),
    "Brightness": ([0.19, 1.0, 1.81], lambda img, f: ImageEnhance.Brightness(img).enhance(f)),
    "Sharpness": ([0.19, 1.0, 1.81], lambda img, f: ImageEnhance.Sharpness(img).enhance(f)),
    "ShearX": ([-0.27, 0.3], affine(lambda img: (1, SH[0], 0, 0, 1, 0))),
    "ShearY": ([-0.27, 0.3], affine(lambda img: (1, 0, 0, SH[0], 1, 0))),
    "TranslateXRel": ([-0.405, 0.2], affine(lambda img: (1, 0, SH[0] * img.size[0], 0, 1, 0))),
    "TranslateYRel": ([-0.405, 0.2], affine(lambda img: (1, 0, 0, 0, 1, SH[0] * img.size[1]))),
}
SH = [0.0]  # the shear / translation argument the affine lambdas read


def planes(img):
    """Channel planes one after another, as lgreg stores an image."""
    return b"".join(band.tobytes() for band in img.split())


def main():
    rng = random.Random(0)
    images = []
    for mode, (w, h) in (("L", (28, 28)), ("RGB", (16, 12))):
        # A gradient plus noise: histograms with gaps, edges and flat regions.
        data = bytes(min(255, max(0, (x * 7 + y * 5) % 256 + rng.randint(-20, 20)))
                     for _ in range(len(mode)) for y in range(h) for x in range(w))
        bands = [Image.frombytes("L", (w, h), data[i * w * h:(i + 1) * w * h]) for i in range(len(mode))]
        images.append(bands[0] if mode == "L" else Image.merge("RGB", bands))
    cases = []
    for name, (values, op) in OPS.items():
        for value in values:
            for img in images:
                SH[0] = value
                (w, h), c = img.size, len(img.getbands())
                cases.append({"op": name, "arg": float(value), "c": c, "h": h, "w": w,
                              "input": planes(img).hex(), "pil": planes(op(img, value)).hex()})
    import PIL
    with open(sys.argv[1], "w") as f:
        json.dump({"pillow": PIL.__version__, "cases": cases}, f)


if __name__ == "__main__":
    main()
