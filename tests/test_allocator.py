"""keep_freed_memory: tunes glibc once, can be switched off, never fails."""

import platform
import sys

from mnistlab.core import allocator


def test_tunes_once_and_reports_it(monkeypatch):
    monkeypatch.setattr(allocator, "_done", [])
    first = allocator.keep_freed_memory()
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert first is glibc
    assert allocator.keep_freed_memory() is first  # idempotent: the cached answer


def test_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setattr(allocator, "_done", [])
    monkeypatch.setenv("MNISTLAB_MALLOC_TUNING", "0")
    assert allocator.keep_freed_memory() is False
