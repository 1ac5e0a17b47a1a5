"""Which shard URLs may be opened: local files only, unless the user opts in on the command line.

webdataset's ``gopen`` opens a plain path or a ``file:`` URL as a file, and runs a command for the
rest: ``pipe:CMD`` is a shell command, ``http(s)``/``sftp``/``ftps``/``scp`` run ``curl``, ``gs`` runs
``gsutil``, ``ais``/``hf``/``htgs`` other tools. A shard spec is data, often read back from a run
directory someone else wrote, so a URL that is not local is refused (:class:`CommandURLError`) unless
the user passed ``--allow-command-urls`` to the command now running (``launch/train.py``,
``launch/evaluate.py``, ``launch/visualize.py``). The opt-in is never a config field: it is not saved
into a run's ``config.yaml`` and a spec read from a saved ``config.yaml`` is refused even with it.

:func:`check_shard_urls` is the rule, applied where specs are preflighted and, as a last guard, where
``trainer.data.tar_read`` opens them (with the process-wide opt-in of :func:`allow_command_urls`, which
DataLoader workers inherit when forked; a spawned worker refuses).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from trainer.checkpointing.run_dir import CONFIG_FILE as SAVED_CONFIG
from trainer.data.split import expand_shards

LOCAL_SCHEMES = ("", "file")
"""URL schemes ``gopen`` opens as a local file (no scheme: a plain path)."""
OPT_IN_FLAG = "--allow-command-urls"

_opted_in = False


class CommandURLError(ValueError):
    """A shard URL that would be opened by running a command, without the user's opt-in."""


def command_url_scheme(url: str) -> str | None:
    """The scheme of ``url`` when opening it is not reading a local file (``pipe``, ``https``, ``gs``, ...;
    ``-`` for standard input), else None. Parsed as ``webdataset.gopen`` parses it."""
    if url == "-":
        return "-"
    scheme = urlparse(url).scheme
    return None if scheme in LOCAL_SCHEMES else scheme


def local_path(url: str) -> str:
    """The file a local shard URL names (a ``file:`` URL's path, as ``gopen`` opens it; a plain path as is)."""
    parsed = urlparse(url)
    return url2pathname(parsed.path) if parsed.scheme == "file" else url


def check_shard_urls(urls: Iterable[str], *, what: str, allow_commands: bool) -> None:
    """Raise :class:`CommandURLError` naming the first of ``urls`` that is not local, unless ``allow_commands``."""
    if allow_commands:
        return
    for url in urls:
        scheme = command_url_scheme(url)
        if scheme is not None:
            raise CommandURLError(
                f"{what}: refusing to open {url!r}: a {scheme!r} URL is opened by running a command (webdataset "
                f"gopen); only local paths and file: URLs are opened unless you pass {OPT_IN_FLAG} on the command "
                f"line (never honoured for a spec read from a saved {SAVED_CONFIG})")


def check_shard_spec(spec: str, *, what: str, allow_commands: bool) -> list[str]:
    """The URLs of shard spec ``spec`` (``trainer.data.split.expand_shards``), checked by :func:`check_shard_urls`."""
    urls = expand_shards(spec)
    check_shard_urls(urls, what=what, allow_commands=allow_commands)
    return urls


def command_urls_permitted(key: str, *, opted_in: bool, config_file: str | Path | None,
                           overrides: Sequence[str]) -> bool:
    """Whether the shard spec at config ``key`` (e.g. ``data.val_shards``) may name command URLs: only with
    the command-line opt-in, and not when the spec comes from a saved run config (a file named
    ``config.yaml``, as training writes into every run directory) rather than an override of ``key``."""
    if not opted_in:
        return False
    overridden = any(item.partition("=")[0].lstrip("+") == key for item in overrides)
    saved = config_file is not None and Path(config_file).name == SAVED_CONFIG
    return overridden or not saved


def allow_command_urls(enabled: bool) -> None:
    """Set this process's opt-in (the command line's ``--allow-command-urls``), used where shards are opened."""
    global _opted_in
    _opted_in = bool(enabled)


def command_urls_allowed() -> bool:
    """This process's opt-in (False unless :func:`allow_command_urls` set it)."""
    return _opted_in
