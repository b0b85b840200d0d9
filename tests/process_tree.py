"""Processes under a pid, read from ``/proc`` (Linux): to find *this* server's Ray, never another's."""

from __future__ import annotations

from pathlib import Path

RAY_DAEMONS = ("raylet", "gcs_server")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def name_of(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, grandchildren...) with its command name."""
    kids, found, todo = _children(), {}, [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            todo.append(child)
            found[child] = name_of(child)
    return found


def ray_daemons(pid: int) -> dict[int, str]:
    """The raylet and GCS server among ``pid``'s descendants."""
    return {p: n for p, n in descendants(pid).items() if n in RAY_DAEMONS}


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
