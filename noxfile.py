"""nox sessions. They run in the current environment (venv_backend="none"): the project's
venv already holds torch (several GB), and a second copy per session would cost minutes
and disk for nothing. Activate the venv from README.md's quickstart first."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "poser", "tests", "noxfile.py")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Throughput on this machine (`poser bench`); pass e.g. `-- --data data/lspet`."""
    session.run("poser", "bench", *session.posargs)
