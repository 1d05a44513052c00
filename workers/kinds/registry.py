"""Job kinds registered by name, so a submission, an estimate and a job process find a kind with a string."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from workers.errors import DuplicateKind, SpecError
from workers.kinds.base import JobKind


class KindRegistry:
    """Job kinds by name; a duplicate name is an error, an unknown one lists the valid names."""

    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: JobKind) -> None:
        if kind.name in self._kinds:
            raise DuplicateKind(f"a job kind named {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    def names(self) -> list[str]:
        """The registered names, in the order they were registered."""
        return list(self._kinds)

    def get(self, name: Any) -> JobKind:
        """The kind registered as ``name``; SpecError on the field ``kind`` (listing the valid names) if none is."""
        if isinstance(name, str) and name in self._kinds:
            return self._kinds[name]
        accepted = "one of " + ", ".join(repr(k) for k in self._kinds)
        # Cut: the name comes from a user and may be huge.
        raise SpecError(f"kind: must be {accepted}, got {name!r:.80}", field="kind", accepted=accepted)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._kinds

    def __iter__(self) -> Iterator[JobKind]:
        return iter(self._kinds.values())


def builtin_kinds() -> KindRegistry:
    """A new registry holding the kinds that ship with wattsched: the diffusion jobs, the synthetic load, the
    user's own commands, and the small GAN and VAE the energy study compares diffusion with."""
    from workers.kinds.command import Command
    from workers.kinds.diffusion_sample import DiffusionSample
    from workers.kinds.diffusion_train import DiffusionTrain
    from workers.kinds.gan_train import GanTrain
    from workers.kinds.generative_sample import GenerativeSample
    from workers.kinds.synthetic import Synthetic
    from workers.kinds.vae_train import VaeTrain

    return KindRegistry([DiffusionTrain(), DiffusionSample(), Synthetic(), Command(), GanTrain(), VaeTrain(),
                         GenerativeSample()])
