"""Shard URLs -> WebDataset records (``{"__key__", "__url__", member: bytes}``).

The same pipeline as ``webdataset.tariterators.tarfile_samples`` (its ``url_opener`` and
``group_by_keys``), with one change: a seekable stream (a local shard) is read as a seekable
tar, one ``read`` per member. webdataset opens every tar as a stream (``tarfile`` mode ``r|*``),
which copies each member through 10 KiB records; for the ~3 MB samples of schema v1 that cost about
three times as long (``bench/loader.py`` measures the loader as a whole). Non-seekable streams
(``pipe:``, HTTP) still go through webdataset's streaming reader.

Records are grouped shard by shard (``shard_groups``), as webdataset's end-of-shard marker does in
one stream. Errors go to ``handler`` as in webdataset: a bad member is reported and the shard goes
on; a shard that cannot be opened or read further is reported and the next shard is read. A
handler that returns False stops the stream. A URL that would run a command (``pipe:``, ``https:``, ...)
raises ``trainer.data.url_policy.CommandURLError`` before it is opened, without the user's opt-in.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterable, Iterator

from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from trainer.data.url_policy import check_shard_urls, command_urls_allowed

_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: members such as __index__ are not data

Handler = Callable[[Exception], bool]


def _is_seekable(stream) -> bool:
    seekable = getattr(stream, "seekable", None)
    return bool(seekable and seekable())


def _members(tar: tarfile.TarFile, url: str, handler: Handler) -> Iterator[dict]:
    """``{"fname", "data", "__url__"}`` per regular member of ``tar``, in archive order."""
    while (info := tar.next()) is not None:
        if not info.isreg() or _META.match(info.name):
            continue
        try:
            data = tar.extractfile(info).read()
        except Exception as exn:  # noqa: BLE001 - the handler decides: count and skip, or re-raise
            exn.args = exn.args + (url,)
            if handler(exn):
                continue
            return
        yield {"fname": info.name, "data": data, "__url__": url}


def shard_members(sources: Iterable[dict], handler: Handler) -> Iterator[dict]:
    """Opened shards (``{"url", "stream"}``) -> member dicts, an empty dict after each shard (the
    end-of-shard marker ``group_by_keys`` expects)."""
    for source in sources:
        url, stream = source["url"], source["stream"]
        if not _is_seekable(stream):
            yield from tar_file_expander([source], handler=handler)
            continue
        try:
            with stream, tarfile.open(fileobj=stream, mode="r:") as tar:
                yield from _members(tar, url, handler)
            yield {}
        except Exception as exn:  # noqa: BLE001
            exn.args = exn.args + (url,)
            if not handler(exn):
                return


class _StopWatch:
    """Wraps a handler and remembers whether it ever returned False (stop the whole stream)."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.stopped = handler, False

    def __call__(self, exn: Exception) -> bool:
        go_on = self.handler(exn)
        self.stopped = self.stopped or not go_on
        return go_on


def _checked(urls: Iterable[dict]) -> Iterator[dict]:
    """``urls`` as they are, each refused (raised, not handled) when it would run a command without opt-in."""
    for source in urls:
        check_shard_urls([source["url"]], what="shard", allow_commands=command_urls_allowed())
        yield source


def shard_groups(urls: Iterable[dict], handler: Handler) -> Iterator[Iterator[dict]]:
    """``{"url": ...}`` dicts -> one iterator of records per shard read (exhaust each before asking
    for the next), skipping (through ``handler``) what is corrupt. A shard named twice in a row is
    two groups, so a reader can keep per-shard state."""
    watch = _StopWatch(handler)
    for source in url_opener(_checked(urls), handler=watch):
        yield group_by_keys(shard_members([source], watch), handler=watch)
        if watch.stopped:
            return


def shard_records(urls: Iterable[dict], handler: Handler) -> Iterator[dict]:
    """``{"url": ...}`` dicts -> WebDataset records, skipping (through ``handler``) what is corrupt."""
    for records in shard_groups(urls, handler):
        yield from records
