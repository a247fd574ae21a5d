"""Keys shared by the tests."""


class HKey:
    """A key with a chosen hash (to force collisions: full ones, or shared low bits) that
    compares equal by `ident` (and is then one key, whatever its hash)."""

    def __init__(self, ident, h=7):
        self.ident = ident
        self.h = h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        return isinstance(other, HKey) and other.ident == self.ident

    def __repr__(self):
        return f"HKey({self.ident}, {self.h})"
