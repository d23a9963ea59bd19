"""The optional heatmap Secondary Capture (`SERVE_DICOM_HEATMAP_SC=true`): what the model looked at, for a viewer.

The decoded image (as `/predict?explain=true` shows it: long side at most 512 px) with the class-activation map of
the most probable label blended over the region the model saw (`service.explain.colour_map`), under a black banner
whose burned-in text says NOT FOR DIAGNOSTIC USE and names the label, its probability and the model. An RGB
Secondary Capture Image (PS3.3 A.8.1) in its own series of the source's study, ImageType DERIVED\\SECONDARY,
Burned In Annotation YES, referencing the source in the Source Image Sequence; UIDs derived as the SR's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from medcore.imaging import crop_box
from service.dicom.sr import Outcome, base_instance, result_uid
from service.explain import colour_map, display_image
from service.registry import ServedModel

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
WARNING_TEXT = "NOT FOR DIAGNOSTIC USE"
BANNER_SHARE = 0.09  # the banner's line height as a share of the image width (legible at any size)


def banner(width: int, lines: Sequence[str]) -> Image.Image:
    """White text on black, one line each, the first (the warning) in full size, the rest smaller."""
    size = max(10, round(width * BANNER_SHARE * 0.6))
    sizes = [size, *[max(8, size // 2)] * (len(lines) - 1)]
    fonts = [ImageFont.load_default(size=s) for s in sizes]  # Pillow's own font: nothing to install
    heights = [round(s * 1.3) for s in sizes]
    image = Image.new("RGB", (width, sum(heights) + size // 3), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    top = size // 6
    for line, font, height in zip(lines, fonts, heights, strict=True):
        draw.text((size // 3, top), line, fill=(255, 255, 255), font=font)
        top += height
    return image


def overlay(data: bytes, served: ServedModel, heatmaps: np.ndarray, label_index: int) -> Image.Image:
    """The display image with one label's heatmap blended over the model's region."""
    image = display_image(data, max_pixels=served.max_pixels, max_bytes=served.max_bytes).convert("RGB")
    region = crop_box(image.size, served.record.preprocessing)
    colours = Image.fromarray(colour_map(heatmaps[label_index], image.width, image.height, region), mode="RGBA")
    return Image.alpha_composite(image.convert("RGBA"), colours).convert("RGB")


def caption(served: ServedModel, outcome: Outcome, label_index: int) -> list[str]:
    decision = outcome.decisions[label_index]
    return [WARNING_TEXT, f"{decision.label} heatmap, p={decision.probability:.3f}; {served.name} {served.version}"]


def build_secondary_capture(
    data: bytes, source: Dataset, served: ServedModel, outcome: Outcome, heatmaps: np.ndarray, now: datetime
) -> Dataset:
    """The Secondary Capture for one inferred instance (blocking: decodes the image; run in the decode pool)."""
    index = int(np.argmax([d.probability for d in outcome.decisions]))
    picture = overlay(data, served, heatmaps, index)
    top = banner(picture.width, caption(served, outcome, index))
    composed = Image.new("RGB", (picture.width, top.height + picture.height))
    composed.paste(top, (0, 0))
    composed.paste(picture, (0, top.height))
    source_uid, record = str(source.SOPInstanceUID), served.record
    series = result_uid(str(source.get("SeriesInstanceUID", source_uid)), record, "series-sc")
    ds = base_instance(source, SECONDARY_CAPTURE, result_uid(source_uid, record, "sc"), series, now)
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesNumber = int(ds.SeriesNumber) + 1
    ds.SeriesDescription = f"AI heatmap, {WARNING_TEXT}: {record.name} {record.version}"[:64]
    ds.ManufacturerModelName, ds.SoftwareVersions = record.name[:64], record.version[:64]
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.PatientOrientation = ""
    ds.DerivationDescription = f"class-activation heatmap of {outcome.decisions[index].label}"[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = source.SOPClassUID, source_uid
    ds.SourceImageSequence = DicomSequence([reference])
    pixels = np.asarray(composed, dtype=np.uint8)
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return ds
