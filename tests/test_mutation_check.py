"""The mutation check's list stays in step with the source (the check itself is run by hand: it takes minutes)."""

from tests.mutation_check import MUTATIONS, SMOKE_MUTATIONS, check_snippets


def test_every_mutation_finds_its_snippet_exactly_once():
    assert check_snippets(MUTATIONS) == []


def test_mutations_are_distinct_changes():
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    assert all(m.original != m.replacement and m.description for m in MUTATIONS)
    assert all(m.alternative[0] != m.alternative[1] for m in MUTATIONS if m.alternative)


def test_smoke_mutations_find_their_snippets_exactly_once():
    assert check_snippets(SMOKE_MUTATIONS) == []
    assert {m.name for m in SMOKE_MUTATIONS}.isdisjoint(m.name for m in MUTATIONS)
