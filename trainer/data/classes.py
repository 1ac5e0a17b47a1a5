"""Grouping V2XPnP object types into training classes (``DataConfig.classes``)."""

from __future__ import annotations

import numpy as np

from trainer.data.config import ClassGroup
from trainer.data.sample import normalise_obj_type
from trainer.data.taxonomy import DROP_ALL_OTHERS, TAXONOMIES

DROPPED = -1
"""Class index of an object type dropped on purpose."""
UNMAPPED = -2
"""Lookup value of a type neither grouped nor dropped (an error once an object uses it)."""


class UnmappedObjectTypeError(ValueError):
    """An object type is neither grouped into a class nor listed in ``drop_obj_types``."""


class ClassGrouping:
    """Maps (normalised) object type names to training class indices."""

    def __init__(self, classes: list[ClassGroup], drop_obj_types: list[str]) -> None:
        self.class_names = [g.name for g in classes]
        self._index = {normalise_obj_type(t): i for i, g in enumerate(classes) for t in g.obj_types}
        self._index.update({normalise_obj_type(t): DROPPED for t in drop_obj_types if t != DROP_ALL_OTHERS})
        self._unlisted = DROPPED if DROP_ALL_OTHERS in drop_obj_types else UNMAPPED

    def class_of(self, obj_type: str) -> int:
        """Class index of ``obj_type`` (``DROPPED`` = -1 for a dropped type)."""
        index = self._index.get(normalise_obj_type(obj_type), self._unlisted)
        if index == UNMAPPED:
            raise UnmappedObjectTypeError(
                f"object type {obj_type!r} is in no class of {self.class_names} and not in drop_obj_types; choose "
                f"the data.taxonomy of the dataset ({', '.join(TAXONOMIES)}), or set data.taxonomy=custom and add "
                "it to data.classes or data.drop_obj_types"
            )
        return index

    def lookup(self, obj_type_names: list[str]) -> np.ndarray:
        """[len(obj_type_names)] int64 class index per type name of a sample's taxonomy.

        Types that no object of the sample uses still need a mapping only when looked up, so this
        maps lazily: unknown names get ``UNMAPPED`` and ``classes_of`` raises if an object uses one.
        """
        out = np.full(len(obj_type_names), UNMAPPED, dtype=np.int64)
        for i, name in enumerate(obj_type_names):
            out[i] = self._index.get(normalise_obj_type(name), self._unlisted)
        return out

    def classes_of(self, obj_types: np.ndarray, obj_type_names: list[str]) -> np.ndarray:
        """[M] class index of each object (``DROPPED`` for dropped types); raises on unmapped types."""
        table = self.lookup(obj_type_names)
        classes = table[obj_types] if len(obj_types) else np.zeros(0, dtype=np.int64)
        if (classes == UNMAPPED).any():
            bad = obj_type_names[int(obj_types[np.argmax(classes == UNMAPPED)])]
            self.class_of(bad)  # raises with the explanation
        return classes
