"""DICOM files written with pydicom, as a hospital's PACS export would hold them.

Every file carries a made-up patient name and id (:data:`PATIENT_NAME`, :data:`PATIENT_ID`) so
tests can check that no header value reaches anything cxr_tune writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    generate_uid,
)

PATIENT_NAME = "Testperson^Quentina"
PATIENT_ID = "PID-7731904"
OTHER_IDS = ("ACC-5512094", "1917-03-04")  # accession number, birth date
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR


def _base(sop_class: str, modality: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.AccessionNumber = OTHER_IDS[0]
    ds.PatientBirthDate = OTHER_IDS[1].replace("-", "")
    return ds


def write_image(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 8,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    voi_first: int = 0,
    rescale: tuple[float, float] | None = None,
    frames: int = 1,
    preamble: bool = True,
) -> Path:
    """Write a DX image whose stored values are ``stored`` (uint8 or uint16, 2-D or 3-D frames).

    Args:
        window: (centre, width) written as the file's VOI window.
        voi_lut: LUT data (uint16) written as the file's VOI LUT sequence; index 0 maps the
            stored value ``voi_first``.
        rescale: (slope, intercept) of the modality rescale.
        preamble: False writes a bare dataset (no 128-byte preamble, no DICM), as old files are.
    """
    ds = _base(DX_SOP_CLASS, "DX")
    allocated = 8 if stored.dtype == np.uint8 else 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), voi_first, 16]
        item.LUTData = [int(v) for v in voi_lut]
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = Sequence([item])
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=preamble, implicit_vr=False, little_endian=True)
    return path


def write_structured_report(path: Path) -> Path:
    """A Basic Text SR: a DICOM object with a report and no pixels."""
    ds = _base(SR_SOP_CLASS, "SR")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    text = Dataset()
    text.ValueType = "TEXT"
    text.TextValue = "No acute cardiopulmonary process."
    ds.ContentSequence = Sequence([text])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
