"""The registry: every pair, IC and VID service the loaded plugins provide, by name and GUID.

Each entry remembers its :class:`Source` (the distribution name and version, and the entry
point, that provided it), so that a conflict can name both parties and ``winhv plugins`` can say
where each thing came from.

Namespaces: pair names, IC names and VID-service names are three separate namespaces, but
interface type GUIDs are one namespace shared by pairs and ICs, because both are channel offers
on the same VMBus and a guest binds its driver by that GUID alone (fact sheet §3.3, §5.9).

Plugins are added as a batch (:meth:`Registry.add_batch`): the whole batch is checked first and
either all of it is entered or none, so a plugin that conflicts half-way leaves no trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from ._descriptions import (
    Description,
    IcDescription,
    PairDescription,
    VidServiceDescription,
    did_you_mean,
)

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "ConflictError",
    "Entry",
    "Kind",
    "Registry",
    "Source",
    "UnknownNameError",
]

Kind: TypeAlias = Literal["pair", "ic", "vid-service"]
_KINDS: Final[dict[type, Kind]] = {
    PairDescription: "pair",
    IcDescription: "ic",
    VidServiceDescription: "vid-service",
}
#: The distribution the built-in plugin ships in.
BUILTIN_DISTRIBUTION: Final = "winhv"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a plugin came from: its distribution (name and version) and entry-point name.

    Plugins registered directly as objects (tests, the pytest plugin) have the distribution
    name they were registered with and an empty version.
    """

    distribution: str
    version: str = ""
    entry_point: str = ""

    def __str__(self) -> str:
        text = f"{self.distribution} {self.version}" if self.version else self.distribution
        return f"{text} (entry point {self.entry_point!r})" if self.entry_point else text


@dataclass(frozen=True, slots=True)
class Entry:
    """A registered description and the source it came from."""

    description: Description
    source: Source

    @property
    def kind(self) -> Kind:
        return _KINDS[type(self.description)]

    @property
    def name(self) -> str:
        return self.description.name


class ConflictError(ValueError):
    """Two plugins claim the same name or interface GUID. Names both distributions."""

    def __init__(self, what: str, existing: Entry, new: Entry) -> None:
        self.what = what
        self.existing = existing
        self.new = new
        super().__init__(
            f"{what} is claimed twice: by {new.kind} {new.name!r} from {new.source} and by "
            f"{existing.kind} {existing.name!r} from {existing.source}"
        )


class UnknownNameError(LookupError):
    """A name or GUID no plugin registered. The message lists what is known."""

    def __init__(self, kind: Kind, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = tuple(sorted(known))
        if self.known:
            listing = "one of " + ", ".join(self.known) + did_you_mean(name, self.known)
        else:
            listing = f"a registered {kind} name (no plugin registers any {kind})"
        self.expected = listing
        super().__init__(f"unknown {kind} {name!r}: expected {listing}")

    def __str__(self) -> str:  # KeyError-style quoting would mangle the message
        return str(self.args[0])


class Registry:
    """Pairs, ICs and VID services by name, and pairs and ICs by interface GUID."""

    def __init__(self) -> None:
        self._names: dict[Kind, dict[str, Entry]] = {k: {} for k in _KINDS.values()}
        self._guids: dict[uuid.UUID, Entry] = {}

    # ---- adding -----------------------------------------------------------------------------

    def add(self, description: Description, source: Source) -> Entry:
        """Register one description; raise :class:`ConflictError` on a clash."""
        return self.add_batch([description], source)[0]

    def add_batch(self, descriptions: Iterable[Description], source: Source) -> list[Entry]:
        """Register all ``descriptions`` from ``source``, or none of them.

        Raises :class:`ConflictError` if any name or GUID is already registered or repeats
        within the batch, and ``TypeError`` for an object that is not a description.
        """
        entries: list[Entry] = []
        names: dict[Kind, dict[str, Entry]] = {k: {} for k in self._names}
        guids: dict[uuid.UUID, Entry] = {}
        for description in descriptions:
            if type(description) not in _KINDS:
                raise TypeError(
                    f"found {description!r}, expected a PairDescription, IcDescription or "
                    "VidServiceDescription"
                )
            entry = Entry(description, source)
            earlier = self._names[entry.kind].get(entry.name) or names[entry.kind].get(entry.name)
            if earlier is not None:
                raise ConflictError(f"{entry.kind} name {entry.name!r}", earlier, entry)
            names[entry.kind][entry.name] = entry
            guid = getattr(description, "interface_id", None)
            if guid is not None:
                earlier = self._guids.get(guid) or guids.get(guid)
                if earlier is not None:
                    raise ConflictError(f"interface GUID {guid}", earlier, entry)
                guids[guid] = entry
            entries.append(entry)
        for kind, table in names.items():
            self._names[kind].update(table)
        self._guids.update(guids)
        return entries

    # ---- lookups ----------------------------------------------------------------------------

    def pair(self, name: str) -> PairDescription:
        """The pair called ``name``; :class:`UnknownNameError` lists the known ones."""
        return self._get("pair", name).description  # type: ignore[return-value]

    def ic(self, name: str) -> IcDescription:
        """The IC called ``name``; :class:`UnknownNameError` lists the known ones."""
        return self._get("ic", name).description  # type: ignore[return-value]

    def vid_service(self, name: str) -> VidServiceDescription:
        """The VID service called ``name``; :class:`UnknownNameError` lists the known ones."""
        return self._get("vid-service", name).description  # type: ignore[return-value]

    def by_interface(self, interface_id: uuid.UUID | str) -> PairDescription | IcDescription:
        """The pair or IC that offers channels of type ``interface_id``."""
        guid = uuid.UUID(str(interface_id))
        entry = self._guids.get(guid)
        if entry is None:
            raise UnknownNameError("pair", str(guid), (str(g) for g in self._guids))
        return entry.description  # type: ignore[return-value]

    def source_of(self, description: Description) -> Source:
        """The source a registered description came from (``KeyError`` if not registered)."""
        entry = self._names[_KINDS[type(description)]].get(description.name)
        if entry is None or entry.description is not description:
            raise KeyError(f"{description.name!r} is not registered")
        return entry.source

    def names(self, kind: Kind) -> tuple[str, ...]:
        """The registered names of ``kind``, sorted."""
        return tuple(sorted(self._names[kind]))

    def entries(self, kind: Kind | None = None) -> tuple[Entry, ...]:
        """Registered entries (of one kind, or all), sorted by kind then name."""
        kinds = [kind] if kind is not None else list(self._names)
        return tuple(e for k in kinds for _, e in sorted(self._names[k].items()))

    @property
    def pairs(self) -> tuple[PairDescription, ...]:
        return tuple(e.description for e in self.entries("pair"))  # type: ignore[misc]

    @property
    def ics(self) -> tuple[IcDescription, ...]:
        return tuple(e.description for e in self.entries("ic"))  # type: ignore[misc]

    @property
    def vid_services(self) -> tuple[VidServiceDescription, ...]:
        return tuple(e.description for e in self.entries("vid-service"))  # type: ignore[misc]

    def __len__(self) -> int:
        return sum(len(t) for t in self._names.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(t)} {k}" for k, t in self._names.items())
        return f"<Registry {counts}>"

    def _get(self, kind: Kind, name: str) -> Entry:
        entry = self._names[kind].get(name)
        if entry is None:
            raise UnknownNameError(kind, name, self._names[kind])
        return entry
