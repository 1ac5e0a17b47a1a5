"""What a conversion found of each object type, judged against a taxonomy (``trainer.data.taxonomy``).

The converter counts the objects of every written sample by (normalised) type; this module says which
class each type goes to under the chosen taxonomy, which are dropped, and which are in no class and not
dropped: training with that taxonomy would stop at the first of those, so the report names them with
their counts and the fix.
"""

from __future__ import annotations

from collections import Counter

from trainer.data.classes import DROPPED, ClassGrouping, UnmappedObjectTypeError
from trainer.data.config import taxonomy_groups
from trainer.data.taxonomy import CUSTOM, TAXONOMIES


def unmapped_types(counts: Counter, taxonomy_name: str) -> dict[str, int]:
    """Types of ``counts`` that ``taxonomy_name`` neither groups nor drops, with their counts ({} for custom)."""
    if taxonomy_name == CUSTOM:
        return {}
    grouping = ClassGrouping(*taxonomy_groups(taxonomy_name))
    out = {}
    for name, count in sorted(counts.items()):
        try:
            grouping.class_of(name)
        except UnmappedObjectTypeError:
            out[name] = count
    return out


def type_report(counts: Counter, taxonomy_name: str) -> list[str]:
    """Lines: every type with its object count and its fate under ``taxonomy_name``, then the fix if any is
    unmapped."""
    if not counts:
        return ["objects by type: none"]
    if taxonomy_name == CUSTOM:
        return ["objects by type: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))]
    grouping = ClassGrouping(*taxonomy_groups(taxonomy_name))
    missing = unmapped_types(counts, taxonomy_name)
    fates = []
    for name, count in sorted(counts.items()):
        if name in missing:
            fate = "UNMAPPED"
        else:
            index = grouping.class_of(name)
            fate = "dropped" if index == DROPPED else grouping.class_names[index]
        fates.append(f"{name} {count} ({fate})")
    lines = [f"objects by type, taxonomy {taxonomy_name}: " + ", ".join(fates)]
    if missing:
        fits = [name for name in TAXONOMIES if name != taxonomy_name and not unmapped_types(counts, name)]
        lines.append(
            f"warning: {sum(missing.values())} object(s) of {len(missing)} type(s) are in no class of taxonomy "
            f"{taxonomy_name!r} and not dropped: {', '.join(f'{t} ({n})' for t, n in missing.items())}; training with "
            f"data.taxonomy={taxonomy_name} stops at the first. Fix: "
            + (f"train with data.taxonomy={' or '.join(fits)} (it maps every type found), or " if fits else "")
            + "set data.taxonomy=custom and list them in data.classes or data.drop_obj_types")
    return lines
