"""Built-in class taxonomies: how each dataset's raw object types group into training classes, as data.

A taxonomy names, for one dataset, the training classes (index = position) with the raw object types of
each, the types dropped on purpose (``"*"``: every type not grouped), and the type given to a YAML entry that
has no ``obj_type`` (None: such an entry is an error). Type names are compared normalised (lower case,
letters and digits: ``"ConcreteTruck"`` -> ``concretetruck``). ``DataConfig.taxonomy`` selects one for
training, ``python -m trainer.data.convert --taxonomy`` for the conversion report; ``custom`` means the
classes are given in ``data.classes`` / ``data.drop_obj_types``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DROP_ALL_OTHERS = "*"
"""A ``drop_obj_types`` entry meaning: every type that no class groups is dropped."""
CUSTOM = "custom"
"""``DataConfig.taxonomy`` value for classes given by hand."""


@dataclass(frozen=True)
class Taxonomy:
    """One dataset's grouping of raw object types into training classes."""

    name: str
    """Name used by ``data.taxonomy`` and ``--taxonomy``."""
    classes: tuple[tuple[str, tuple[str, ...]], ...]
    """(class name, normalised raw types) per training class, in class-index order."""
    drop: tuple[str, ...]
    """Normalised raw types dropped on purpose; ``("*",)`` drops every type no class groups."""
    default_obj_type: Optional[str]
    """Type of a YAML entry without ``obj_type`` (None: an error naming the file)."""
    source: str
    """Where the grouping comes from."""


TAXONOMIES: dict[str, Taxonomy] = {
    t.name: t for t in (
        Taxonomy(
            name="v2xpnp",
            classes=(("vehicle", ("car", "van", "motorcycle")),
                     ("pedestrian", ("pedestrian", "bicycle", "scooter")),
                     ("truck", ("truck", "bus", "concretetruck"))),
            drop=("barrier",),
            default_obj_type=None,
            source="TurboTrain's grouping of the 10 V2XPnP-Seq types into three classes named after V2X-Real's "
                   "super-classes (not V2X-Real's own grouping: van, motorcycle and bicycle go elsewhere there)",
        ),
        Taxonomy(
            name="v2x-real",
            classes=(("vehicle", ("longvehicle", "car", "policecar")),
                     ("pedestrian", ("child", "roadworker", "pedestrian", "scooter", "scooterrider", "motorcycle",
                                     "motorcylerider", "bicyclerider")),
                     ("truck", ("truck", "van", "trashcan", "concretetruck", "bus"))),
            drop=(DROP_ALL_OTHERS,),
            default_obj_type=None,
            source="V2X-Real's SUPER_CLASS_MAP (opencood/data_utils/__init__.py), the dataset's own spelling "
                   "'MotorcyleRider' included; like its loader, every other type (Bicycle, FireHydrant, ...) is "
                   "dropped and a missing obj_type is an error",
        ),
        Taxonomy(
            name="opv2v",
            classes=(("vehicle", ("car",)),),
            drop=(),
            default_obj_type="car",
            source="OPV2V / V2XSet annotate vehicles only and write no obj_type: every entry is a vehicle",
        ),
    )
}
"""Every built-in taxonomy by name."""


def taxonomy(name: str) -> Taxonomy:
    """The built-in taxonomy ``name``; ``ValueError`` listing the names otherwise."""
    if name not in TAXONOMIES:
        raise ValueError(f"unknown taxonomy {name!r}; built-in: {', '.join(TAXONOMIES)}")
    return TAXONOMIES[name]
