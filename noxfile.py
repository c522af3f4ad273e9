"""nox sessions: tests, slow, lint, typecheck, examples, ecosystem, bench.  Run e.g. `nox -s tests`."""

import glob

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples", "ecosystem"]


@nox.session
def tests(session):
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def slow(session):
    """The slow tier: every corpus model and op, the other dtype × transform pairings, more random models."""
    session.install("-e", ".[test,equinox,flax,plot]")
    session.run("python", "-m", "pytest", "-m", "slow", *session.posargs, env={"JGC_RANDOM_EXAMPLES": "16"})


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "jgc", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "jgc", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session):
    """pyright on the package (basic mode, [tool.pyright] in pyproject.toml), against the installed JAX."""
    session.install("-e", ".[plot]", "pyright")
    session.run("pyright", "--pythonpath", f"{session.bin}/python")


@nox.session
def examples(session):
    session.install("-e", ".[equinox,flax,plot]")
    for path in sorted(glob.glob("examples/*.py")):
        session.run("python", path)


@nox.session
def ecosystem(session):
    """Install the optional extras (equinox, flax, matplotlib) and run what needs them."""
    session.install("-e", ".[test,equinox,flax,plot]")
    session.run(
        "python", "-m", "pytest", "tests/test_ecosystem.py", "tests/test_plot.py", "tests/test_plugin.py", *session.posargs
    )
    for path in ("examples/equinox_model.py", "examples/flax_model.py", "examples/plot.py"):
        session.run("python", path)


@nox.session
def bench(session):
    session.install("-e", ".[bench]")
    for path in ("benchmarks/defaults.py", "benchmarks/full_check.py"):
        session.run("python", path)
