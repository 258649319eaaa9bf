"""Datasets with stable sample ids, content hashes and bad-sample tolerance.

Three sources (``data.kind``): IDX files (:mod:`spray.data.idx`), an image folder
(:mod:`spray.data.folder`) and a user factory (:mod:`spray.data.factory`, whose contract is documented
there and in docs/config.md). Files are decoded for every mode and bit depth by
:mod:`spray.data.decoding`, brought to the model's channels by :mod:`spray.data.channels`, transformed
by :mod:`spray.data.transform` and thumbnailed by :mod:`spray.data.thumbnails`.

Every item of an :class:`AuditDataset` is a :class:`Sample` or, when the sample cannot be used, a
:class:`~spray.records.SkippedSample` with the reason, so one bad file never stops a run.

Sample ids are stable across runs: the path relative to the root for image folders, the index for IDX
files and factories (or the factory dataset's own ``sample_ids`` attribute when it has one).
"""

from spray.data.channels import model_input_channels
from spray.data.dataset import AuditDataset, build_dataset
from spray.data.decoding import DECODER_VERSION, DecodeOptions, decode_image, image_to_tensor
from spray.data.folder import IMAGE_EXTENSIONS
from spray.data.idx import read_idx, write_idx
from spray.data.sample import Sample, SampleBatch, UnreadableSample, collate_samples, content_hash
from spray.data.thumbnails import make_thumbnail
from spray.data.transform import Transform
from spray.records import SkippedSample

__all__ = [
    "DECODER_VERSION",
    "IMAGE_EXTENSIONS",
    "AuditDataset",
    "DecodeOptions",
    "Sample",
    "SampleBatch",
    "SkippedSample",
    "Transform",
    "UnreadableSample",
    "build_dataset",
    "collate_samples",
    "content_hash",
    "decode_image",
    "image_to_tensor",
    "make_thumbnail",
    "model_input_channels",
    "read_idx",
    "write_idx",
]
