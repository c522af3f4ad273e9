"""nox session for issue 5 (equinox, flax and matplotlib extras) — for the lead to fold into noxfile.py.

Run: nox -f noxfile_issue5.py -s ecosystem
"""

import nox


@nox.session
def ecosystem(session):
    """Install the optional extras and run what needs them: examples and their tests."""
    session.install("-e", ".[test,equinox,flax,plot]")
    session.run(
        "pytest",
        "tests/test_ecosystem.py",
        "tests/test_plot.py",
        "tests/test_plugin.py",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )
    for example in ("examples/equinox_model.py", "examples/flax_model.py", "examples/plot.py", "examples/layers.py"):
        session.run("python", example)
