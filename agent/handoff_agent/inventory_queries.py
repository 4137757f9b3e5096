"""The reads the inventory and the dossier need beyond the registry's public methods.

Their SQL lives in the metadata store (``store/inventory.py``); these names stay for the
inventory and dossier modules that call them.
"""

from __future__ import annotations


def latest_numbers(registry) -> dict[str, int]:
    return registry.latest_numbers()


def numbers_in_stage(registry, stage: str) -> dict[str, int]:
    return registry.numbers_in_stage(stage)


def later_data(registry, model: str, number: int) -> list[dict]:
    return registry.later_data(model, number)


def trust_audit(registry) -> list[dict]:
    return registry.trust_audit()


def first_audit_seq(registry, subject: str) -> int | None:
    return registry.first_audit_seq(subject)


def audit_from(registry, seq: int) -> list[dict]:
    return registry.audit_from(seq)


def stage_history(registry, model: str) -> list[dict]:
    return registry.model_stage_history(model)
