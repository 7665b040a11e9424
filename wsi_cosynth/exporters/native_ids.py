"""Which class ids a written dataset speaks: the format's own, or the source taxonomy's.

Lizard/CoNIC tools hard-code Lizard's ids (1 neutrophil ... 6 connective), PanNuke tools
PanNuke's channel order and HoVer-Net's CoNSeP loader CoNSeP's classes, whatever
``taxonomy.json`` says. So a Lizard, PanNuke or CoNSeP-layout dataset is
written in the format's own taxonomy whenever every class maps into it by name (the built-in
aliases of :mod:`wsi_cosynth.taxonomy`, or the user's class map). When some class does not,
the ids stay those of the source taxonomy, and the writer says so in one warning and in
``taxonomy.json`` (``ids_follow``, ``note``). COCO and GeoJSON datasets keep the source taxonomy (COCO categories and GeoJSON classifications carry their names; match by name).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CosynthError
from ..taxonomy import Taxonomy, get_taxonomy, map_name, normalise_name

NATIVE_TAXONOMY: dict[str, str] = {"lizard": "lizard", "pannuke": "pannuke", "consep": "consep"}


@dataclass(frozen=True)
class IdChoice:
    """The taxonomy a writer uses, and what to tell the user about it (None: nothing to say)."""

    taxonomy: Taxonomy
    note: str | None
    native: bool


def _listing(taxonomy: Taxonomy) -> str:
    return ", ".join(f"{i + 1} {n}" for i, n in enumerate(taxonomy.names))


def choose_ids(fmt: str, taxonomy: Taxonomy, class_map: dict[str, str] | None = None) -> IdChoice:
    """The taxonomy a ``fmt`` dataset of ``taxonomy`` tiles is written in (see the module docstring)."""
    key = NATIVE_TAXONOMY.get(str(fmt).lower())
    if key is None:
        return IdChoice(taxonomy, None, native=False)
    native = get_taxonomy(key)
    if [normalise_name(n) for n in taxonomy.names] == [normalise_name(n) for n in native.names]:
        return IdChoice(native, None, native=True)
    unmapped, renamed = [], []
    for name in taxonomy.names:
        try:
            target = native.name_of(map_name(name, native, class_map))
        except CosynthError:
            unmapped.append(name)
            continue
        if normalise_name(target) != normalise_name(name):
            renamed.append(f"{name} -> {target}")
    if unmapped:
        note = (
            f"{fmt} class ids follow taxonomy {taxonomy.key!r} ({_listing(taxonomy)}), NOT {key}'s own "
            f"({_listing(native)}), because {', '.join(repr(n) for n in unmapped)} "
            f"{'has' if len(unmapped) == 1 else 'have'} no {key} class; taxonomy.json says so. Tools that "
            f"assume {key} ids will miscount: map {'it' if len(unmapped) == 1 else 'them'} with --class-map "
            f"(a YAML line '{unmapped[0]}: <one of {', '.join(native.names)}>')"
        )
        return IdChoice(taxonomy, note, native=False)
    note = f"{fmt} class ids are {key}'s own ({_listing(native)})"
    if renamed:
        note += f"; classes mapped by name: {', '.join(renamed)}"
    return IdChoice(native, note, native=True)


def taxonomy_record(taxonomy: Taxonomy, note: str | None) -> dict:
    """The ``taxonomy.json`` record: the class set plus which ids the files use and why."""
    record = taxonomy.to_dict()
    record["ids_follow"] = taxonomy.key
    if note:
        record["note"] = note
    return record
