"""Scripts a command line writes and then runs: ``curl -o i.sh URL && bash i.sh``.

Splitting "download" and "run" into two steps must not turn a pipe into a shell
(destructive) into two harmless-looking writes. Within one command line every file
written by a redirect, ``tee``, or a downloader is remembered, with its content
when the text shows it (``cat > t.py <<'EOF' … EOF``, ``echo … > x.sh``). A later
step that runs such a file is judged by that content, or is destructive when the
content came from the network, a decoder or anything else not visible.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Final

from agent_shim.risk.model import Assessment, Stdin, destructive, is_dynamic
from agent_shim.risk.shellparse import Command
from agent_shim.risk.tools_run import inline_code

ShellFn = Callable[[str], Assessment]

_SHELLS: Final = frozenset({"bash", "sh", "zsh", "dash", "ksh", "ash", "mksh", "source", "."})
_INTERPRETERS: Final = frozenset({"python", "python3", "python2", "perl", "ruby", "node", "php",
                                  "deno", "bun", "pypy3", "lua", "Rscript"})
_PREFIXES: Final = frozenset({"sudo", "env", "nohup", "time", "exec", "command", "nice"})
_DOWNLOADERS: Final = frozenset({"curl", "wget", "aria2c", "http", "https", "xh", "fetch"})
_OUTPUT_FLAGS: Final = frozenset({"-o", "--output", "-O", "--output-document"})


def _key(path: str) -> str:
    return posixpath.normpath(path.strip()) if path.strip() else ""


def _url_name(args: list[str]) -> str | None:
    url = next((a for a in args if "://" in a), None)
    if url is None:
        return None
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name or None


class Written:
    """Files written so far in one command line: path → visible content, or None."""

    __slots__ = ("files",)

    def __init__(self) -> None:
        self.files: dict[str, str | None] = {}

    def record(self, cmd: Command, feed: Stdin, output: Stdin) -> None:
        """Remember what ``cmd`` writes; ``output`` is what it would print, if visible."""
        words = list(cmd.words)
        content = output.text if output.visible else None
        for r in cmd.redirects:
            if r.body is not None and words == ["cat"] and not r.dynamic_body:
                content = r.body
        for r in cmd.redirects:
            if r.op in (">", ">|", "&>", ">>", "&>>") and not is_dynamic(r.target):
                self.files[_key(r.target)] = content if r.op in (">", ">|", "&>") else None
        if not words:
            return
        name = posixpath.basename(words[0])
        if name == "tee":
            for a in words[1:]:
                if not a.startswith("-"):
                    self.files[_key(a)] = feed.text if feed.visible else None
        elif name in _DOWNLOADERS:
            outs = [words[k + 1] for k, a in enumerate(words[:-1]) if a in _OUTPUT_FLAGS]
            outs += [a.split("=", 1)[1] for a in words if a.startswith(("--output=",
                                                                        "--output-document="))]
            if any(a in ("-O", "--remote-name") for a in words) or (name == "wget" and not outs):
                outs.append(_url_name(words) or "")
            for o in outs:
                if o and o != "-":
                    self.files[_key(o)] = None

    def check(self, cmd: Command, shell: ShellFn) -> Assessment | None:
        """The verdict for running a file written earlier, or None if ``cmd`` runs none."""
        if not self.files:
            return None
        words = [w for w in cmd.words if "=" not in w or w.startswith("-")]
        while words and posixpath.basename(words[0]) in _PREFIXES:
            words.pop(0)
        if not words:
            return None
        name = posixpath.basename(words[0])
        script: str | None = None
        lang = "shell"
        if name in _SHELLS or name.startswith("python") or name in _INTERPRETERS:
            script = next((w for w in words[1:] if not w.startswith("-")), None)
            lang = "shell" if name in _SHELLS else name
        elif "/" in words[0] or _key(words[0]) in self.files:
            script = words[0]
            lang = "python" if script.endswith(".py") else "shell"
        if script is None or _key(script) not in self.files:
            return None
        content = self.files[_key(script)]
        if content is None:
            return destructive(f"runs {script}, which this command line wrote from content "
                               "that is not visible (download, decoder or append)")
        return shell(content) if lang == "shell" else inline_code(lang, content)
