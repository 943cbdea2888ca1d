"""The data room: what the user points at → a deterministic, fingerprinted train/val split, and the views of
its images a backbone sees.

:func:`load_data` takes an image folder, a torchvision built-in name, a torch Dataset or a :class:`DataSplit`;
the split's datasets yield raw ``(PIL RGB image, int label)`` items. A transform turns an image into a
``uint8 [3, H, W]`` tensor at the backbone's :class:`~zoo_core.DataConfig` size, :func:`normalize` turns a
batch into ``float32`` on its device, and :func:`make_loader` builds a seeded DataLoader.

Modules (each docstring states its rules):

* :mod:`.images`: one image → RGB (:func:`to_rgb`, :func:`load_image`), the scan-time check, the content
  hash, why a file is unreadable;
* :mod:`.folders`: image folders and pre-split ``train``/``val`` folders, the scan and its symlink rules;
* :mod:`.sources`: the split's item datasets, torch Dataset objects and torchvision built-ins,
  :func:`known_labels`;
* :mod:`.split`: :class:`DataSplit`, the stratified seeded split, the fingerprint;
* :mod:`.load`: :func:`load_data`, the entry point;
* :mod:`.transforms`: the evaluation view and normalisation; :mod:`.augment`: the training views and the
  augmentation policy;
* :mod:`.loaders`: seeded DataLoaders;
* :mod:`.inputs`: images as the library API takes them (paths, PIL, tensors: the tensor convention) and
  :class:`Preprocess`, a backbone's evaluation preprocessing as one callable;
* :mod:`.demo`: the built-in demo dataset (shapes drawn in code).
"""

from .augment import TRAIN_CROP_SCALE, train_transform
from .images import (
           IMAGE_EXTENSIONS,
           UnreadableImage,
           as_rgb,
           check_image,
           content_hash,
           load_image,
           to_rgb,
           why_unreadable,
)
from .inputs import Preprocess, as_image, image_list
from .load import load_data
from .loaders import auto_num_workers, make_loader, seed_worker, usable_cpus
from .sources import (
           BUILTINS,
           DATA_ROOT_ENV,
           ImageFiles,
           Transformed,
           dataset_names,
           default_data_root,
           item_name,
           known_labels,
)
from .split import DataSplit, DataWarning
from .transforms import eval_transform, interpolation, normalize

__all__ = ["BUILTINS", "DATA_ROOT_ENV", "IMAGE_EXTENSIONS", "TRAIN_CROP_SCALE", "DataSplit", "DataWarning",
           "ImageFiles", "Preprocess", "Transformed", "UnreadableImage", "as_image", "as_rgb", "auto_num_workers", "check_image",
           "content_hash", "dataset_names", "default_data_root", "eval_transform", "interpolation", "item_name",
           "image_list", "known_labels", "load_data", "load_image", "make_loader", "normalize", "seed_worker", "to_rgb",
           "train_transform", "usable_cpus", "why_unreadable"]
