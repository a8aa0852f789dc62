"""Never lose work: the progress file beside a results file, its lock, and the merge of sharded runs.

A progress file is JSON Lines: a header ``{"unifer_progress": 1, "run": {...}}`` naming what decides the answers
(model, input, engine, dtype, token budget, image root), then one ``{"index": i, "result": {...}}`` line per
finished item, appended and fsynced a batch at a time. A process killed at any moment (SIGKILL included) leaves at
worst a torn last line, which the next run cuts off. The final results file is always built from the progress
file's lines, so a resumed run and an uninterrupted one write the same bytes.

The running process holds an exclusive ``flock`` on its progress file: a second process on the same output is
refused, and the kernel drops the lock when its holder dies, so a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from unifer.errors import UniferError

FORMAT_VERSION = 1


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 ≤ i < n) → (i, n); None stays None."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise UniferError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UniferError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_indices(count: int, shard: tuple[int, int] | None) -> list[int]:
    """Items of shard i/n: every n-th item from i, so each shard gets a fair mix of the (label-sorted) inputs."""
    if shard is None:
        return list(range(count))
    i, n = shard
    return list(range(i, count, n))


def progress_path(output: Path, shard: tuple[int, int] | None = None) -> Path:
    tag = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    return output.with_name(f"{output.name}{tag}.progress.jsonl")


def _describe(value) -> str:
    s = json.dumps(value, ensure_ascii=False)
    return s if len(s) <= 80 else s[:77] + "..."


class ProgressFile:
    """An open, locked progress file: ``done`` maps input index → finished result record."""

    def __init__(self, path: Path, run: dict, overwrite: bool = False, wait_message: str | None = None):
        self.path = Path(path)
        self.run = run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UniferError(wait_message or f"another inference run is writing {self.path}; let it finish, or "
                              "choose another --output") from None
        try:
            self._load(overwrite)
        except BaseException:
            self.close()
            raise

    def _load(self, overwrite: bool) -> None:
        self.done: dict[int, dict] = {}
        if overwrite:
            self._start_fresh()
            return
        header, self.done, good_bytes = read_progress(self.path)
        if header is None:
            self._start_fresh()
            return
        check_same_run(self.path, header.get("run"), self.run)
        if good_bytes < os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, good_bytes)  # a torn last line from a killed run
        os.lseek(self.fd, 0, os.SEEK_END)

    def _start_fresh(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.done = {}
        self._write([{"unifer_progress": FORMAT_VERSION, "run": self.run}])

    def _write(self, objects: list[dict]) -> None:
        data = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects).encode("utf-8")
        view = memoryview(data)
        start = os.lseek(self.fd, 0, os.SEEK_CUR)
        try:
            while view:
                view = view[os.write(self.fd, view):]
            os.fsync(self.fd)
        except OSError as e:
            # A full disk: cut the part-written batch, so the file holds whole batches only, and stop cleanly.
            try:
                os.ftruncate(self.fd, start)
                os.lseek(self.fd, start, os.SEEK_SET)
            except OSError:
                pass  # a torn last line is cut by the next run anyway
            from unifer.data.jsonio import WriteError

            raise WriteError(self.path, e, note=f"the {len(self.done)} items finished before are kept there; "
                                                "free space and rerun to resume") from None

    def append(self, finished: list[tuple[int, dict]]) -> None:
        """Record finished items (index, result) in one write."""
        self._write([{"index": i, "result": r} for i, r in finished])
        # Keep what a rerun would read, not the in-memory objects: the final file is built from these.
        for i, r in finished:
            self.done[i] = json.loads(json.dumps(r, ensure_ascii=False))

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_progress(path: Path) -> tuple[dict | None, dict[int, dict], int]:
    """(header or None, done, byte length of the intact prefix). A torn last line is left out; a broken line
    before the end means the file is not ours or was edited, and raises."""
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    header, done, good = None, {}, 0
    for n, line in enumerate(lines[:-1]):  # the piece after the last newline is torn (or empty)
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            # JSON escapes newlines and UTF-8 never holds a 0x0A byte inside a character, so only the piece
            # after the last newline can be torn; a broken line before it is damage, not a kill.
            raise UniferError(f"{path}: line {n + 1} is not a progress record; delete the file or pass "
                              "--overwrite to start over") from None
        if n == 0:
            if not isinstance(obj, dict) or obj.get("unifer_progress") != FORMAT_VERSION:
                raise UniferError(f"{path} is not a unifer progress file (or from another version); delete it "
                                  "or pass --overwrite to start over")
            header = obj
        elif isinstance(obj, dict) and isinstance(obj.get("index"), int) and isinstance(obj.get("result"), dict):
            done[obj["index"]] = obj["result"]
        else:
            raise UniferError(f"{path}: line {n + 1} is not a progress record; delete the file or pass "
                              "--overwrite to start over")
        good += len(line) + 1
    return header, done, good


def check_same_run(path: Path, old: dict | None, new: dict, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to mix answers of another run (other model, input, engine, dtype, budget, image root)."""
    old = old if isinstance(old, dict) else {}
    diffs = [k for k in sorted(set(old) | set(new)) if k not in ignore and old.get(k) != new.get(k)]
    if diffs:
        what = "; ".join(f"{k}: {_describe(old.get(k))} there, {_describe(new.get(k))} now" for k in diffs)
        raise UniferError(f"{path} holds answers from a run with different arguments ({what}); rerun with the "
                          "same arguments to resume, or pass --overwrite to start over")


def results_in_order(done: dict[int, dict], indices: list[int]) -> list[dict]:
    return [done[i] for i in indices]


def merge_shards(output: Path, run: dict, count: int, shards: int | None = None) -> tuple[bool, str]:
    """Write ``output`` from the shard progress files when all of them are complete (and remove them).

    Returns (merged, message). Each shard file is locked while it is read, so a shard still running is never
    merged; whichever shard finishes last merges."""
    candidates = sorted(output.parent.glob(f"{output.name}.shard-*-of-*.progress.jsonl"))
    if shards is None:
        counts = {p.name.rsplit(".shard-", 1)[1].split(".")[0].split("-of-")[1] for p in candidates}
        if not candidates:
            return False, f"no shard progress files beside {output}"
        if len(counts) != 1:
            raise UniferError(f"shard progress files for different shard counts beside {output}: "
                              f"{', '.join(p.name for p in candidates)}")
        shards = int(counts.pop())
    files = [progress_path(output, (i, shards)) for i in range(shards)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        return False, f"waiting for shard files {', '.join(missing)}"
    fds = []
    try:
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False, f"shard {f.name} is still running"
        merged: dict[int, dict] = {}
        for i, f in enumerate(files):
            header, done, _ = read_progress(f)
            if header is None:
                return False, f"shard {f.name} has not started"
            check_same_run(f, header.get("run"), run, ignore=("shard",))
            want = shard_indices(count, (i, shards))
            if any(j not in done for j in want):
                left = sum(j not in done for j in want)
                return False, f"shard {i}/{shards} has {left} items left"
            merged.update((j, done[j]) for j in want)
        from unifer.data.jsonio import write_json_atomic

        write_json_atomic(output, results_in_order(merged, list(range(count))))
        for f in files:
            f.unlink(missing_ok=True)
        return True, f"merged {shards} shards"
    finally:
        for fd in fds:
            os.close(fd)
