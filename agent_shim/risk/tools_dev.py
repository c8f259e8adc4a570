"""Developer tooling: build tools, test runners, linters and formatters.

Builds and test runs execute project code the command line does not show, so
they are writes (see ``tools_run`` for why not destructive); a build target named
like ``destroy``/``drop-db`` is destructive. Linters and type checkers only read
unless given their fix/write flag; formatters write unless asked to check.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from agent_shim.risk.model import Assessment, Call, Handler, combine, destructive, read, write
from agent_shim.risk.opts import getopt
from agent_shim.risk.tools_pkg import script_name_risk

_MAKE_VALUES: Final = "CfIjlWoe"


def make(call: Call) -> Assessment:
    o = getopt(call.args, _MAKE_VALUES, {"directory", "file", "makefile", "include-dir", "jobs",
                                        "load-average", "what-if", "new-file", "assume-new",
                                        "old-file", "assume-old", "eval"})
    if o.has("n", "dry-run", "just-print", "recon", "q", "question"):
        return read(f"{call.name} -n only prints what would run")
    if o.has("p", "print-data-base") and o.has("q"):
        return read(f"{call.name} -pq only prints the database")
    targets = [t for t in o.pos if "=" not in t]
    if not targets:
        return write(f"{call.name} runs the default target; its recipes are not visible")
    return combine(script_name_risk(call.name, t) for t in targets)


def task_runner(call: Call) -> Assessment:
    """just / task / rake / invoke / mage / nx: run named recipes."""
    if any(a in ("--list", "-l", "--summary", "-T", "--tasks", "--dry-run", "-n", "--show",
                 "--help", "-h", "--version") for a in call.args):
        return read(f"{call.name} --list/--dry-run only prints")
    targets = [a for a in call.args if not a.startswith("-") and "=" not in a]
    if not targets:
        return write(f"{call.name} runs the default recipe; its content is not visible")
    return combine(script_name_risk(call.name, t) for t in targets[:1])


def build_tool(call: Call) -> Assessment:
    """gradle / mvn / bazel / cmake / ninja / sbt / dotnet / swift / mix / ant."""
    targets = [a for a in call.args if not a.startswith("-")]
    if any(a in ("--version", "-version", "-v", "--help", "help", "tasks", "projects",
                 "dependencies", "query", "info", "-n", "--dry-run", "-t") for a in call.args[:2]):
        return read(f"{call.name} {call.args[0]} only reports")
    if targets:
        return combine(script_name_risk(call.name, t) for t in targets[:3])
    return write(f"{call.name} builds the project (build scripts run)")


def tests(call: Call) -> Assessment:
    if any(a in ("--collect-only", "--co", "--list-tests", "--listTests", "--version",
                 "--help", "-h", "--fixtures", "--markers") for a in call.args):
        return read(f"{call.name} --collect-only only lists tests")
    return write(f"{call.name} runs the project's tests (arbitrary project code)")


def linter(fix_flags: Collection[str], what: str = "reports problems") -> Handler:
    """A checker that only reads unless one of ``fix_flags`` is present."""

    def handler(call: Call) -> Assessment:
        flags = {a.split("=", 1)[0] for a in call.args if a.startswith("-")}
        if flags & set(fix_flags):
            return write(f"{call.name} {sorted(flags & set(fix_flags))[0]} rewrites files")
        return read(f"{call.name} only {what}")

    return handler


def formatter(check_flags: Collection[str]) -> Handler:
    """A formatter that rewrites files unless one of ``check_flags`` is present."""

    def handler(call: Call) -> Assessment:
        flags = {a.split("=", 1)[0] for a in call.args if a.startswith("-")}
        if flags & set(check_flags):
            return read(f"{call.name} --check only reports")
        return write(f"{call.name} rewrites files")

    return handler


def ruff(call: Call) -> Assessment:
    verb = next((a for a in call.args if not a.startswith("-")), "check")
    flags = {a.split("=", 1)[0] for a in call.args if a.startswith("-")}
    if verb == "format":
        if flags & {"--check", "--diff"}:
            return read("ruff format --check only reports")
        return write("ruff format rewrites files")
    if verb in ("clean",):
        return write("ruff clean deletes caches")
    if flags & {"--fix", "--unsafe-fixes", "--fix-only", "--add-noqa"}:
        return write("ruff --fix rewrites files")
    return read(f"ruff {verb} only reports problems")


def tsc(call: Call) -> Assessment:
    flags = {a.split("=", 1)[0] for a in call.args if a.startswith("-")}
    if flags & {"--noEmit", "--version", "-v", "--help", "-h", "--showConfig", "--listFiles",
                "--listFilesOnly"}:
        return read(f"{call.name} --noEmit only type-checks")
    return write(f"{call.name} emits compiled files")


_DJANGO_READ: Final = frozenset({"check", "showmigrations", "sqlmigrate", "diffsettings",
                                 "inspectdb", "help", "version", "sqlflush", "sqlsequencereset",
                                 "show_urls", "makemigrations --check"})


def django(call: Call) -> Assessment:
    pos = [a for a in call.args if not a.startswith("-")]
    verb = pos[0] if pos else "help"
    if verb in ("flush", "reset_db", "migrate:fresh") or (verb == "migrate" and "zero" in pos):
        return destructive(f"{call.name} {verb} deletes database data")
    if verb in ("dbshell", "shell", "shell_plus"):
        if any(a in ("-c", "--command") for a in call.args):
            return write(f"{call.name} {verb} -c runs code against the database")
        return destructive(f"{call.name} {verb} opens an interactive session; not visible")
    if verb in _DJANGO_READ or ("--check" in call.args and verb == "makemigrations"):
        return read(f"{call.name} {verb} only reads")
    if verb == "test":
        return write(f"{call.name} test runs the project's tests")
    return script_name_risk(call.name, verb)


def artisan(call: Call) -> Assessment:
    verb = next((a for a in call.args if not a.startswith("-")), "list")
    if verb in ("migrate:fresh", "migrate:reset", "migrate:rollback", "db:wipe"):
        return destructive(f"artisan {verb} drops or rolls back database tables")
    if verb in ("list", "help", "route:list", "about", "migrate:status", "env"):
        return read(f"artisan {verb} only reads")
    if verb in ("tinker", "db"):
        return destructive(f"artisan {verb} opens an interactive session; not visible")
    return script_name_risk("artisan", verb)


def pre_commit(call: Call) -> Assessment:
    verb = next((a for a in call.args if not a.startswith("-")), "run")
    if verb in ("run", "try-repo"):
        return write("pre-commit run runs hooks (they may rewrite files)")
    if verb in ("help", "sample-config", "validate-config", "validate-manifest"):
        return read(f"pre-commit {verb} only reads")
    return write(f"pre-commit {verb} changes hooks")


_TESTS: Final = ("pytest", "py.test", "tox", "nox", "jest", "vitest", "mocha", "ava", "karma",
                 "playwright", "cypress", "rspec", "phpunit", "behave", "robot", "ctest",
                 "nosetests", "nose2", "trial", "green", "ward", "tap", "jasmine", "pest",
                 "codecept", "coverage", "hypothesis")
_READONLY_CHECKERS: Final = ("mypy", "pyright", "pyflakes", "flake8", "pylint", "bandit",
                             "pycodestyle", "pydocstyle", "vulture", "shellcheck", "hadolint",
                             "yamllint", "staticcheck", "tflint", "checkov", "tfsec", "trivy",
                             "semgrep", "actionlint", "kubeconform", "kubeval", "cfn-lint",
                             "mdl", "codespell", "typos", "pyre", "dmypy", "vale", "htmlhint",
                             "jsonlint", "xmllint", "gitleaks", "detect-secrets", "lychee",
                             "commitlint", "cspell", "ty", "basedpyright")

HANDLERS: Final[dict[str, Handler]] = {
    "make": make, "gmake": make, "bmake": make, "just": task_runner, "task": task_runner,
    "rake": task_runner, "invoke": task_runner, "mage": task_runner, "nx": task_runner,
    "turbo": task_runner, "lerna": task_runner, "grunt": task_runner, "gulp": task_runner,
    **{n: build_tool for n in ("gradle", "gradlew", "mvn", "mvnw", "bazel", "bazelisk", "cmake",
                               "ninja", "sbt", "dotnet", "swift", "mix", "ant", "meson", "scons",
                               "buck", "buck2", "pants", "xcodebuild", "msbuild", "zig",
                               "rebar3", "stack", "cabal", "lein", "clj", "dune", "opam",
                               "vite", "webpack", "rollup", "esbuild", "parcel", "next",
                               "nuxt", "astro", "hugo", "jekyll", "mkdocs", "sphinx-build")},
    **{n: tests for n in _TESTS},
    **{n: linter(("--fix", "--apply", "--write")) for n in _READONLY_CHECKERS},
    "django-admin": django, "manage.py": django, "artisan": artisan, "rails": task_runner,
    "ruff": ruff, "tsc": tsc, "vue-tsc": tsc, "pre-commit": pre_commit,
    "eslint": linter(("--fix", "--fix-dry-run-false")),
    "stylelint": linter(("--fix",)), "rubocop": linter(("-a", "-A", "--auto-correct",
                                                         "--autocorrect", "--autocorrect-all")),
    "standard": linter(("--fix",)), "markdownlint": linter(("--fix",)),
    "markdownlint-cli2": linter(("--fix",)), "golangci-lint": linter(("--fix",)),
    "sqlfluff": lambda c: write("sqlfluff fix rewrites files") if any(
        a in ("fix", "format") for a in c.args) else read("sqlfluff lint only reports"),
    "biome": lambda c: write("biome --write rewrites files") if any(
        a in ("--write", "--apply", "--apply-unsafe", "format") and "--check" not in c.args
        for a in c.args) else read("biome check only reports"),
    "prettier": linter(("--write", "-w")), "gofmt": linter(("-w",)),
    "goimports": linter(("-w",)), "clang-format": linter(("-i",)), "shfmt": linter(("-w",)),
    "autopep8": linter(("-i", "--in-place")), "yapf": linter(("-i", "--in-place")),
    "black": formatter(("--check", "--diff")), "isort": formatter(("--check", "--check-only",
                                                                     "-c", "--diff")),
    "rustfmt": formatter(("--check",)), "dprint": formatter(("check",)),
    "djlint": formatter(("--check", "--lint")), "terraform-docs": formatter(("--dry-run",)),
}  # fmt: skip
